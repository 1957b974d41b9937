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
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faust
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from faust.streams import _current_event
from faust.types import EventT
from mode.utils.times import want_seconds

from services.common.faust_commits import fix_gap_commits, track_confirmed_commits
from services.common.faust_read import read_committed
from services.common.faust_resume import fix_stream_resume
from services.common.kafka import make_admin
from services.common.logs import configure_logging, get_logger
from services.common.runtime import HealthServer
from services.common.security import faust_broker_kwargs
from services.common.settings import Settings

RAW: dict[str, str] = {"key_serializer": "raw", "value_serializer": "raw"}  # for app.topic(...)


def faust_app(
    s: Settings, app_id: str, state_dir: Path, session_timeout_s: float, replication_factor: int, **extra: Any
) -> faust.App:
    """A faust app with raw values, RocksDB tables in ``state_dir`` and acks from every replica;
    offsets committed past transaction markers at once and confirmed commits tracked
    (``faust_commits.py``), committed records read only (``faust_read.py``), no record lost when
    a rebalance resumes the streams (``faust_resume.py``)."""
    fix_gap_commits()
    track_confirmed_commits()
    read_committed()
    fix_stream_resume()
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


@contextmanager
def current_event(event: EventT) -> Iterator[None]:
    """Make ``event`` faust's current event while the block runs.

    A faust table write goes to the changelog partition of the current event, which faust sets
    only for a stream iterated one event at a time; ``stream.take_events`` fills its batch in
    another task, so a write after it names the input it belongs to with this."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def changelog_topics(app: faust.App) -> list[NewTopic]:
    """The changelog topics of the app's tables, as faust would declare them."""
    topics = []
    for table in app.tables.values():
        changelog = table.changelog_topic
        policies = (("compact", changelog.compacting), ("delete", changelog.deleting))
        policy = ",".join(name for name, on in policies if on)
        config = {"cleanup.policy": policy or "delete"}
        if changelog.retention:
            config["retention.ms"] = str(int(want_seconds(changelog.retention) * 1000))
        topics.append(
            NewTopic(
                changelog.get_topic_name(),
                num_partitions=changelog.partitions or app.conf.topic_partitions,
                replication_factor=app.conf.topic_replication_factor,
                config=config,
            )
        )
    return topics


def _partition_count(admin: AdminClient, name: str) -> int:
    return len(admin.list_topics(name, timeout=10).topics[name].partitions)


def ensure_changelog_topics(app: faust.App, settings: Settings) -> list[str]:
    """Create missing changelog topics before the worker starts; the names created.

    Faust creates them itself at start, but after its consumer fetched metadata: until the next
    metadata refresh (5 minutes) every table write fails with ``PartitionsMismatch`` ("changelog
    topic has 0 partitions") and the agent crash-loops. Topics that exist before the consumer
    starts are in its first metadata.
    """
    admin = make_admin(settings)
    existing = admin.list_topics(timeout=30).topics
    missing = [t for t in changelog_topics(app) if t.topic not in existing]
    if not missing:
        return []
    for future in admin.create_topics(missing, operation_timeout=30).values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # another replica raced us: fine
                raise
    # A created topic shows 0 partitions in metadata for a moment: the very state that makes
    # faust crash-loop. Wait until the broker reports every partition.
    deadline = time.monotonic() + 30
    for topic in missing:
        while _partition_count(admin, topic.topic) < topic.num_partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"changelog topic {topic.topic} has no partitions after 30 s")
            time.sleep(0.1)  # the controller is propagating the new topic
    return [t.topic for t in missing]


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
    created = ensure_changelog_topics(app, settings)
    if created:
        log.info("changelog topics created", extra={"topics": created})
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
