"""The loader's HTTP port: /metrics /healthz /readyz and the analytics API.

* ``GET /reports`` — the report names and descriptions.
* ``GET /reports/NAME?since=&until=&app=&person=&search=`` — ``{"columns": [...], "rows": [[...]]}``.
* ``POST /query`` (body: one read-only SQL statement) — same shape.

Refused requests answer 400 ``{"error": ...}``; statements ClickHouse cannot run answer 422.
In embedded mode this is the only way into the data while the loader runs (it owns chDB);
queries share the loader's client under its lock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import datetime
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from clickhouse_connect.driver.client import Client
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from services.common.runtime import QuietHandler
from services.loader import metrics
from services.loader.analytics import QueryFailed, QueryRefused, Result, run_query, run_report
from services.loader.reports import REPORTS

MAX_BODY = 1 << 20


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise QueryRefused(f"not an ISO time: {value!r}") from None


class AnalyticsServer:
    def __init__(
        self, host: str, port: int, client: Client, lock: threading.Lock, ready: Callable[[], bool]
    ) -> None:
        server_ref = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/metrics":
                    self._reply(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                elif url.path == "/healthz":
                    self._reply(200, b"ok\n")
                elif url.path == "/readyz":
                    ok = server_ref.ready()
                    self._reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
                elif url.path == "/reports":
                    self._json(200, {name: r.description for name, r in REPORTS.items()})
                elif url.path.startswith("/reports/"):
                    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                    name = url.path.removeprefix("/reports/")
                    self._answer(
                        "report",
                        lambda c: run_report(
                            c,
                            name,
                            since=_time(query.get("since")),
                            until=_time(query.get("until")),
                            app=query.get("app"),
                            person=query.get("person"),
                            search=query.get("search"),
                        ),
                    )
                else:
                    self._reply(404, b"not found\n")

            def do_POST(self) -> None:
                if urlparse(self.path).path != "/query":
                    self._reply(404, b"not found\n")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._json(400, {"error": "statement too long"})
                    return
                sql = self.rfile.read(length).decode("utf-8", "replace")
                self._answer("query", lambda c: run_query(c, sql))

            def _answer(self, kind: str, fn: Callable[[Client], Result]) -> None:
                try:
                    with metrics.QUERY_SECONDS.labels(kind).time(), server_ref.lock:
                        result = fn(server_ref.client)
                except QueryRefused as exc:
                    self._json(400, {"error": str(exc)})
                    return
                except QueryFailed as exc:
                    self._json(422, {"error": str(exc)})
                    return
                self._json(200, result.to_json())

            def _json(self, status: int, body: Any) -> None:
                self._reply(status, json.dumps(body, default=str).encode(), "application/json")

        self.client = client
        self.lock = lock
        self.ready = ready
        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="analytics", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> AnalyticsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
