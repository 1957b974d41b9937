"""What every faust-streaming service (enricher, segmenter, trigger) shares: the app's settings and
the worker around it with our health server and JSON logs.

Values are raw bytes in faust (our Serde does Avro), tables live in RocksDB (rocksdict) under the
service's state dir, faust's own web server is off (/metrics /healthz /readyz come from
:class:`HealthServer`), and SIGTERM is handled by the faust worker: it stops the agents, flushes
the producer, commits offsets and closes the tables.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust

from services.common.kafka import ensure_topics, make_admin
from services.common.logs import configure_logging, get_logger
from services.common.runtime import HealthServer
from services.common.security import faust_broker_kwargs
from services.common.settings import Settings
from services.common.topics import TopicSpec

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


def ensure_changelog_topics(app: faust.App, settings: Settings, deadline_s: float = 60.0) -> list[str]:
    """Create every table's changelog topic (compacted, the table's partitions) unless it exists.

    Faust creates them itself when the worker starts, but its consumer can take a metadata
    snapshot in between: then a table sees its changelog with 0 partitions and the agent crashes
    with ``PartitionsMismatch`` on every event while the service reports ready (seen in
    `make chaos` on a fresh broker). Created beforehand, they are in the first snapshot.
    """
    specs = [
        TopicSpec(
            table.changelog_topic.get_topic_name(),
            None,
            partitions=table.partitions or app.conf.topic_partitions,
            cleanup_policy="compact",
            retention_ms=-1,
        )
        for table in app.tables.values()
    ]
    unprefixed = settings.model_copy(update={"topic_prefix": ""})  # faust's names carry the prefix already
    created = [status.name for status in ensure_topics(unprefixed, specs) if status.action == "created"]
    # Created is not yet visible: wait until the metadata shows every partition.
    admin, deadline = make_admin(settings), time.monotonic() + deadline_s
    while True:
        topics = admin.list_topics(timeout=10).topics
        if all(
            spec.name in topics and len(topics[spec.name].partitions) >= spec.partitions for spec in specs
        ):
            return created
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"changelog topics not visible after {deadline_s:.0f}s: {[s.name for s in specs]}"
            )
        time.sleep(0.2)


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


def run_worker(
    service: str,
    settings: Any,
    build_app: Callable[[Any, Callable[[], None]], faust.App],
    default_health_port: int,
) -> int:
    """``tagstream run <service>``: health server, the app, the faust worker until SIGTERM."""
    configure_logging(service, settings.log_level)
    log = get_logger(service)
    started = threading.Event()
    health = HealthServer(
        settings.health_host, settings.health_port_or(default_health_port), ready=started.is_set
    ).start()
    log.info(f"{service} starting", extra={"app_id": settings.full_app_id, "health_port": health.port})
    app = build_app(settings, started.set)
    ensure_changelog_topics(app, settings)
    level = "warn" if logging.getLogger().level >= logging.WARNING else "info"
    worker = faust.Worker(
        app,
        loglevel=level,
        quiet=True,
        redirect_stdouts=False,
        logging_config=_json_logging(service, settings.log_level),
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        health.stop()
        log.info(f"{service} stopped")
    return 0
