"""What every faust-streaming service (enricher, segmenter, trigger) shares: the app's settings and
the worker around it with our health server and JSON logs.

Values are raw bytes in faust (our Serde does Avro), tables live in RocksDB (rocksdict) under the
service's state dir, faust's own web server is off (/metrics /healthz /readyz come from
:class:`HealthServer`), and SIGTERM is handled by the faust worker: it stops the agents, flushes
the producer, commits offsets and closes the tables.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust

from services.common.logs import configure_logging, get_logger
from services.common.runtime import HealthServer
from services.common.security import faust_broker_kwargs
from services.common.settings import Settings

RAW: dict[str, str] = {"key_serializer": "raw", "value_serializer": "raw"}  # for app.topic(...)


def faust_app(
    s: Settings, app_id: str, state_dir: Path, session_timeout_s: float, replication_factor: int, **extra: Any
) -> faust.App:
    """A faust app with raw values, RocksDB tables in ``state_dir`` and acks from every replica."""
    state_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        app_id,
        broker=f"kafka://{s.bootstrap_servers}",
        store="rocksdb://",  # faust picks the rocksdict driver (installed) over python-rocksdb
        datadir=str(state_dir),
        web_enabled=False,  # /metrics /healthz /readyz come from our HealthServer
        broker_session_timeout=session_timeout_s,
        broker_heartbeat_interval=min(3.0, session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        topic_replication_factor=replication_factor,
        **RAW,
        **faust_broker_kwargs(s),  # Kafka SASL/TLS (services/common/security.py)
        **extra,
    )


def _json_logging(service: str, level: str) -> dict[str, object]:
    """The faust worker reconfigures logging at start; keep our JSON lines (services.common.logs)."""
    quiet = {"level": "WARNING"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "services.common.logs.JsonFormatter", "service": service}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "json"}
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {name: quiet for name in ("faust", "mode", "aiokafka", "kafka")},
    }


CLEAN_STOP = ".clean-stop"


def drop_state_after_crash(state_dir: Path) -> bool:
    """Empty ``state_dir`` unless the previous run stopped cleanly; whether it did so.

    Faust writes a table row to the local RocksDB at once but sends its changelog record (and the
    agent's output records) later: after a SIGKILL the local tables can be ahead of both, and a
    replayed input record would then look applied while its outputs were never sent. Without the
    local files the tables are rebuilt from the changelog, which is never ahead of the outputs
    sent before it (docs/segments.md, "Recovery"). A clean stop flushes and commits first, so its
    files are kept.
    """
    marker = state_dir / CLEAN_STOP
    crashed = state_dir.exists() and any(state_dir.iterdir()) and not marker.exists()
    if crashed:
        shutil.rmtree(state_dir)
    marker.unlink(missing_ok=True)
    return crashed


def run_worker(
    service: str,
    settings: Any,
    build_app: Callable[[Any, Callable[[], None]], faust.App],
    default_health_port: int,
    state_dir: Path | None = None,
) -> int:
    """``tagstream run <service>``: health server, the app, the faust worker until SIGTERM.

    ``state_dir``: the app's table files, dropped at start after an unclean stop
    (:func:`drop_state_after_crash`)."""
    configure_logging(service, settings.log_level)
    log = get_logger(service)
    if state_dir is not None and drop_state_after_crash(state_dir):
        log.warning("unclean stop: local tables dropped, rebuilding them from the changelog")
    started = threading.Event()
    health = HealthServer(
        settings.health_host, settings.health_port_or(default_health_port), ready=started.is_set
    ).start()
    log.info(f"{service} starting", extra={"app_id": settings.full_app_id, "health_port": health.port})
    app = build_app(settings, started.set)
    level = "warn" if logging.getLogger().level >= logging.WARNING else "info"
    worker = faust.Worker(
        app,
        loglevel=level,
        quiet=True,
        redirect_stdouts=False,
        logging_config=_json_logging(service, settings.log_level),
    )
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        health.stop()
        log.info(f"{service} stopped")
    if code == 0 and state_dir is not None:
        (state_dir / CLEAN_STOP).touch()
    return code
