"""``tagstream run trigger``: the faust worker plus our health server (port 9105 by default).

Faust's own web server is disabled; SIGTERM is handled by the faust worker (it stops the agents,
flushes the producer, commits offsets and closes the tables).
"""

from __future__ import annotations

import logging
import threading

import faust

from services.common.logs import configure_logging, get_logger
from services.common.runtime import HealthServer
from services.trigger.app import build_app
from services.trigger.settings import TriggerSettings

log = get_logger("trigger")
DEFAULT_HEALTH_PORT = 9105  # /metrics /healthz /readyz unless TAGSTREAM_HEALTH_PORT is set


def _json_logging(level: str) -> dict[str, object]:
    """The faust worker reconfigures logging at start; keep our JSON lines (services.common.logs)."""
    quiet = {"level": "WARNING"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "services.common.logs.JsonFormatter", "service": "trigger"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "json"}
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {name: quiet for name in ("faust", "mode", "aiokafka", "kafka")},
    }


def run() -> int:
    settings = TriggerSettings()
    configure_logging("trigger", settings.log_level)
    started = threading.Event()
    health = HealthServer(
        settings.health_host, settings.health_port_or(DEFAULT_HEALTH_PORT), ready=started.is_set
    ).start()
    log.info("trigger starting", extra={"app_id": settings.full_app_id, "health_port": health.port})
    app = build_app(settings, on_ready=started.set)
    level = "warn" if logging.getLogger().level >= logging.WARNING else "info"
    worker = faust.Worker(
        app,
        loglevel=level,
        quiet=True,
        redirect_stdouts=False,
        logging_config=_json_logging(settings.log_level),
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        health.stop()
        log.info("trigger stopped")
    return 0
