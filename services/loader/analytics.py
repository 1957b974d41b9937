"""Running reports and read-only SQL: the guard, the execution, and where to send the query.

Read-only is enforced twice: the statement must be a single SELECT/WITH/SHOW/DESCRIBE/EXPLAIN/
EXISTS without ``INTO OUTFILE`` or file/network table functions (a clear message for the user),
and ClickHouse runs it with ``readonly=1`` (the engine refuses any write that slips through).

Where a query goes: with ``TAGSTREAM_CLICKHOUSE_URL`` straight to the server; in embedded mode
through the running loader's HTTP API (it owns the chDB data dir; its address is in
``<data_dir>/loader/api.json``), or, when no loader runs, by opening chDB directly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
from clickhouse_connect.driver.client import Client

from services.common.clickhouse import connect
from services.common.settings import Settings
from services.loader.reports import REPORTS, parameters

READ_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_STRINGS = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`(?:[^`\\]|\\.)*`")
_FORBIDDEN = re.compile(
    r"\bINTO\s+OUTFILE\b|\b(file|url|s3|s3Cluster|hdfs|remote|remoteSecure|mysql|postgresql|executable"
    r"|jdbc|odbc|sqlite|mongodb|redis|azureBlobStorage|gcs)\s*\(",
    re.IGNORECASE,
)


class QueryRefused(ValueError):
    """The statement is not read-only (or not allowed); the message says why."""


class QueryFailed(RuntimeError):
    """ClickHouse could not run the statement; the message is ClickHouse's."""


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[list[Any]]

    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": [[_plain(v) for v in row] for row in self.rows]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        return cls(list(data["columns"]), [list(r) for r in data["rows"]])


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def check_read_only(sql: str) -> str:
    """Return the statement without comments and trailing ';', or raise :class:`QueryRefused`."""
    text = _COMMENTS.sub(" ", sql).strip().rstrip(";").strip()
    if not text:
        raise QueryRefused("empty statement")
    bare = _STRINGS.sub("''", text)
    if ";" in bare:
        raise QueryRefused("one statement at a time")
    keyword = bare.split(None, 1)[0].upper().lstrip("(")
    if keyword not in READ_STATEMENTS:
        allowed = ", ".join(READ_STATEMENTS)
        raise QueryRefused(f"read-only: {keyword} statements are refused (allowed: {allowed})")
    if match := _FORBIDDEN.search(bare):
        raise QueryRefused(f"read-only: {match.group(0).rstrip('(').strip()} is not allowed in queries")
    return text


def execute(client: Client, sql: str, params: dict[str, Any] | None = None) -> Result:
    """Run a read-only statement (already checked) with ``readonly=1``."""
    try:
        result = client.query(sql, parameters=params or None, settings={"readonly": 1})
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        if "UNKNOWN_TABLE" in message:
            message += " (tables are created by the loader: has `tagstream run loader` run yet?)"
        raise QueryFailed(message) from None
    return Result(list(result.column_names), [list(row) for row in result.result_rows])


def run_query(client: Client, sql: str) -> Result:
    return execute(client, check_read_only(sql))


def run_report(client: Client, name: str, **filters: Any) -> Result:
    if name not in REPORTS:
        raise QueryRefused(f"unknown report {name!r}; reports: {', '.join(REPORTS)}")
    return execute(client, REPORTS[name].sql, parameters(**filters))


# -- where the query goes ---------------------------------------------------------------------
def api_file(settings: Settings) -> Path:
    return settings.data_dir / "loader" / "api.json"


def running_loader_url(settings: Settings) -> str | None:
    """The analytics API of the loader that owns the embedded data dir, if one answers."""
    path = api_file(settings)
    try:
        url = json.loads(path.read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None
    try:
        if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
            return url
    except httpx.HTTPError:
        return None
    return None


class Analytics:
    """What the CLI uses: the same calls whether they run over HTTP or on a local client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = None if settings.clickhouse_url else running_loader_url(settings)

    def query(self, sql: str) -> Result:
        if self.url:
            return self._http("POST", "/query", content=sql.encode())
        check_read_only(sql)  # refuse before opening anything
        return self._local(lambda c: run_query(c, sql))

    def report(self, name: str, **filters: Any) -> Result:
        if self.url:
            params = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in filters.items() if v}
            return self._http("GET", f"/reports/{name}", params=params)
        return self._local(lambda c: run_report(c, name, **filters))

    def _local(self, fn: Any) -> Result:
        client = connect(self.settings.clickhouse_dsn)
        try:
            return fn(client)
        finally:
            client.close()

    def _http(self, method: str, path: str, **kwargs: Any) -> Result:
        response = httpx.request(method, f"{self.url}{path}", timeout=300.0, **kwargs)
        if response.status_code == 400:
            raise QueryRefused(response.json()["error"])
        if response.status_code != 200:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise QueryFailed(message)
        return Result.from_json(response.json())
