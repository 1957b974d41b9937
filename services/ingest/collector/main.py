"""``tagstream run collector``: the HTTP collector in the foreground.

Uvicorn owns SIGTERM/SIGINT: it stops accepting connections, lets in-flight requests finish
(each waits for its broker acknowledgement), then the app's shutdown flushes the producer and
the process exits. A request answered 200 was acknowledged before the answer, so nothing
acknowledged is lost.
"""

from __future__ import annotations

import uvicorn

from services.common.logs import configure_logging, get_logger
from services.common.runtime import StopFlag
from services.ingest.collector.app import create_app
from services.ingest.collector.settings import CollectorSettings, load_write_keys

log = get_logger(__name__)


def build_server(settings: CollectorSettings) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.collector_host,
        port=settings.collector_port,
        log_config=None,  # our JSON logs, not uvicorn's
        access_log=False,  # per-request lines would drown the log; /metrics counts requests
        lifespan="on",
        timeout_graceful_shutdown=settings.collector_delivery_timeout_s + 10,
    )
    return uvicorn.Server(config)


def run() -> int:
    settings = CollectorSettings()
    configure_logging("collector", settings.log_level)
    keys = load_write_keys(settings)
    if not keys:
        log.warning("no write keys configured: every tracking API request will get 401")
    if not settings.tracking_secret.get_secret_value():
        log.warning("TAGSTREAM_TRACKING_SECRET is unset: tracking links will be refused")
    log.info(
        "collector starting",
        extra={"host": settings.collector_host, "port": settings.collector_port, "write_keys": len(keys)},
    )
    # Uvicorn handles SIGTERM/SIGINT while serving, then restores the previous handlers and
    # re-raises the signal; with StopFlag's handlers installed first, that re-raise only sets
    # the flag, and the process exits 0 after its graceful shutdown instead of dying by signal.
    stop = StopFlag().install()
    server = build_server(settings)
    server.run()
    log.info("collector stopped", extra={"signalled": stop.is_set})
    return 0 if server.started else 1
