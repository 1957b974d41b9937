"""The collector's HTTP application (Starlette): tracking API, tracking links, health, metrics.

A request's path, top to bottom: authenticate the write key -> read the body (gunzip, size
limits) -> parse JSON -> rate-limit the key -> map every message to a record (all or nothing:
one bad message refuses the request with a reason naming it) -> encode -> produce and wait for
the broker's acknowledgement -> 200. Nothing is answered 200 before acks=all.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from services.common.kafka import record_key
from services.common.logs import get_logger
from services.common.serde import Serde, SerdeError
from services.common.steps import Rejection
from services.common.topics import topic_name
from services.ingest.collector import metrics, tracking
from services.ingest.collector.limits import MAX_MESSAGE_BYTES, RateLimiter, TooLarge, read_body
from services.ingest.collector.native import MAPPERS, map_native
from services.ingest.collector.producer import AsyncProducer, DeliveryFailed
from services.ingest.collector.replies import basic_username, error
from services.ingest.collector.segment import SEGMENT_TYPES, Mapped, map_message
from services.ingest.collector.settings import CollectorSettings, load_write_keys
from services.ingest.collector.shortlinks import ShortLinkTable

log = get_logger(__name__)
Handler = Callable[[Request], Awaitable[Response]]


class Collector:
    """What every request needs: keys, limits, serde, the producer, the short-link table."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.write_keys = load_write_keys(settings)
        self.secret = settings.tracking_secret.get_secret_value()
        self.limiter = RateLimiter(settings.collector_rate_per_key, settings.collector_burst_per_key)
        self.serde = Serde(registry_url=settings.schema_registry_url)
        self.producer: AsyncProducer | None = None
        self.short_links = ShortLinkTable(settings)
        self.background: set[asyncio.Task[Any]] = set()
        self._ready_at = 0.0

    def start(self) -> None:
        self.producer = AsyncProducer(self.settings, self.settings.collector_delivery_timeout_s)
        self.short_links.start()

    async def stop(self) -> None:
        # Uvicorn has stopped accepting and finished in-flight requests; pixels still producing
        # in the background get their acknowledgement before the producer flushes and closes.
        if self.background:
            await asyncio.wait(self.background, timeout=self.settings.collector_delivery_timeout_s + 5)
        if self.producer is not None:
            producer, self.producer = self.producer, None
            left = await asyncio.to_thread(producer.close)
            log.info("producer closed", extra={"undelivered": left})
        self.short_links.stop()

    async def produce(self, mapped: list[Mapped]) -> None:
        """Encode and produce; returns once the broker acknowledged all of them."""
        assert self.producer is not None, "collector not started"
        records = []
        for spec, record in mapped:
            name = topic_name(spec, self.settings)
            value = self.serde.encode(spec.record_type or "", record, topic=name, check=False)
            records.append((name, record_key(record), value))
        await self.producer.send_all(records)
        for spec, _ in mapped:
            metrics.RECORDS.labels(spec.name).inc()

    def in_background(self, mapped: list[Mapped]) -> None:
        task = asyncio.get_running_loop().create_task(self.produce(mapped))
        self.background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            metrics.DELIVERY_FAILURES.inc()
            log.warning("background produce failed", extra={"error": str(task.exception())})

    async def ready(self) -> bool:
        if self.producer is None:
            return False
        if time.monotonic() - self._ready_at < 1.0:  # probes come often; metadata is not free
            return True
        if await asyncio.to_thread(self.producer.reachable):
            self._ready_at = time.monotonic()
            return True
        return False


def instrumented(route: str, handler: Handler) -> Handler:
    async def wrapper(request: Request) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status_code
            return response
        finally:
            metrics.LATENCY.labels(route).observe(time.perf_counter() - started)
            metrics.REQUESTS.labels(route, str(status)).inc()

    return wrapper


def _messages(body: Any, kind: str) -> list[Any] | Rejection:
    if kind == "batch" or (kind in MAPPERS and isinstance(body, dict) and "batch" in body):
        batch = body.get("batch") if isinstance(body, dict) else None
        if not isinstance(batch, list):
            return Rejection("schema_violation", "batch: required, a list of messages", "validate")
        return batch
    return [body]


def _map(kind: str, msg: Any, body: Any, source: str, received_ms: int, ip: str | None, path: str) -> Any:
    sent_at = body.get("sentAt") if isinstance(body, dict) else None
    common = {
        "source": source,
        "received_ms": received_ms,
        "sent_at": sent_at,
        "request_ip": ip,
        "path": path,
    }
    if kind in MAPPERS:
        return map_native(kind, msg, **common)
    if isinstance(msg, dict) and isinstance(body, dict) and "context" in body and "context" not in msg:
        msg = {**msg, "context": body["context"]}  # a batch-level context applies to each message
    return map_message(msg, kind=None if kind == "batch" else kind, **common)


def api_handler(collector: Collector, kind: str) -> Handler:
    async def handle(request: Request) -> Response:
        received_ms = int(time.time() * 1000)
        header_key = basic_username(request)
        if header_key is not None and header_key not in collector.write_keys:
            return error(401, "unauthorized", "unknown write key")
        gzip = request.headers.get("content-encoding", "").lower() == "gzip"
        try:
            raw = await read_body(request.stream(), gzip)
            body = json.loads(raw)
        except TooLarge as exc:
            return error(413, "too_large", str(exc))
        except zlib.error:
            return error(400, "malformed", "body: Content-Encoding is gzip but the body is not")
        except (ValueError, UnicodeDecodeError) as exc:
            return error(400, "malformed", f"body: malformed JSON ({str(exc)[:80]})")
        key = header_key or (body.get("writeKey") if isinstance(body, dict) else None)
        if not key:
            return error(401, "unauthorized", "missing write key (HTTP Basic username or writeKey)")
        if key not in collector.write_keys:
            return error(401, "unauthorized", "unknown write key")
        messages = _messages(body, kind)
        if isinstance(messages, Rejection):
            return error(400, messages.reason, messages.message)
        in_batch = kind == "batch" or (isinstance(body, dict) and "batch" in body)
        if len(raw) > MAX_MESSAGE_BYTES:  # only a body this big can hold an oversize message
            for i, msg in enumerate(messages):
                if len(json.dumps(msg, separators=(",", ":"))) > MAX_MESSAGE_BYTES:
                    return error(413, "too_large", f"{f'batch[{i}]' if in_batch else 'message'}: over 32 KB")
        wait_s = collector.limiter.take(key, len(messages))
        if wait_s:
            return error(429, "rate_limited", "write key over its rate limit", {"Retry-After": str(wait_s)})
        source, ip = collector.write_keys[key], request.client.host if request.client else None
        mapped: list[Mapped] = []
        for i, msg in enumerate(messages):
            path = f"batch[{i}]." if in_batch else ""
            result = _map(kind, msg, body, source, received_ms, ip, path)
            if isinstance(result, Rejection):
                metrics.REJECTED.labels(result.step, result.reason).inc()
                return error(400, result.reason, result.message)
            mapped.append(result)
        try:
            await collector.produce(mapped)
        except SerdeError as exc:
            return error(400, "schema_violation", str(exc))
        except DeliveryFailed as exc:
            metrics.DELIVERY_FAILURES.inc()
            log.warning("delivery failed", extra={"route": kind, "error": str(exc)})
            return error(503, "unavailable", "broker did not acknowledge; retry later")
        return JSONResponse({"success": True})

    return handle


def create_app(settings: CollectorSettings) -> Starlette:
    collector = Collector(settings)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        collector.start()
        try:
            yield
        finally:
            await collector.stop()

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_request: Request) -> Response:
        ok = await collector.ready()
        return PlainTextResponse("ready\n" if ok else "not ready\n", status_code=200 if ok else 503)

    async def metrics_page(_request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route(f"/v1/{kind}", instrumented(f"/v1/{kind}", api_handler(collector, kind)), methods=["POST"])
        for kind in (*SEGMENT_TYPES, "batch", *MAPPERS)
    ]
    routes.append(
        Route("/v1/import", instrumented("/v1/import", api_handler(collector, "batch")), methods=["POST"])
    )
    routes += [Route(path, instrumented(path, h), methods=m) for path, h, m in tracking.routes(collector)]
    routes += [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_page),
    ]
    origins = [o.strip() for o in settings.collector_cors_origins.split(",") if o.strip()]
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            max_age=600,
        )
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.collector = collector
    return app
