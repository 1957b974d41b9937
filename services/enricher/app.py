"""The faust app: three agents, two tables. Decode and encode stay here, at the edges.

    *.valid (N partitions) --hop--> enricher.identity (1 partition)
        --resolve (table `identity`)--> enricher.routed (N partitions, key person id)
        --person (table `persons`)-->  enriched, profiles, (merge hand-overs back to routed)

Values are raw bytes in faust and Avro through our Serde. Tables live in RocksDB (rocksdict) and
are restored from their changelog topics after a restart or when partitions move.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import faust

from services.common.logs import get_logger
from services.common.serde import Serde, SerdeError
from services.common.steps import Rejection, SourcePosition, dead_letter
from services.common.topics import (
    DEAD_LETTERS,
    ENRICHED,
    ENRICHER_IDENTITY,
    ENRICHER_ROUTED,
    PROFILES,
    VALID_TOPICS,
    topic_name,
)
from services.enricher import metrics
from services.enricher.geofences import load_catalogue
from services.enricher.identity import resolve
from services.enricher.person import PersonConfig, apply
from services.enricher.settings import EnricherSettings

log = get_logger("enricher")
SEEN_IDS = 512  # per person: message ids already applied (a replay after a crash is skipped)


def person_config(s: EnricherSettings) -> PersonConfig:
    return PersonConfig(
        max_devices=s.enricher_max_device_tokens,
        launch_dedup_ms=int(s.enricher_launch_dedup_s * 1000),
        session_timeout_ms=int(s.enricher_session_timeout_s * 1000),
        dwell_ms=int(s.enricher_dwell_s * 1000),
        hysteresis_m=s.enricher_hysteresis_m,
        catalogue=load_catalogue(s.enricher_geofence_file),
    )


def build_app(s: EnricherSettings, on_ready: Callable[[], None] = lambda: None) -> faust.App:
    serde = Serde(registry_url=s.schema_registry_url)
    cfg = person_config(s)
    s.enricher_state_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        s.full_app_id,
        broker=f"kafka://{s.bootstrap_servers}",
        store="rocksdb://",  # faust picks the rocksdict driver (installed) over python-rocksdb
        datadir=str(s.enricher_state_dir),
        web_enabled=False,  # /metrics /healthz /readyz come from our HealthServer
        key_serializer="raw",
        value_serializer="raw",
        broker_session_timeout=s.enricher_broker_session_timeout_s,
        broker_heartbeat_interval=min(3.0, s.enricher_broker_session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        topic_replication_factor=s.enricher_replication_factor,
    )
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    valid = app.topic(*(topic_name(t, s) for t in VALID_TOPICS), **raw)
    identity_topic = app.topic(
        topic_name(ENRICHER_IDENTITY, s), partitions=ENRICHER_IDENTITY.partitions, **raw
    )
    routed = app.topic(topic_name(ENRICHER_ROUTED, s), partitions=ENRICHER_ROUTED.partitions, **raw)
    enriched = app.topic(topic_name(ENRICHED, s), **raw)
    profiles = app.topic(topic_name(PROFILES, s), **raw)
    dead = app.topic(topic_name(DEAD_LETTERS, s), **raw)
    table_opts: dict[str, Any] = {"default": None}  # untyped tables: json in changelogs
    identity = app.Table("identity", partitions=ENRICHER_IDENTITY.partitions, **table_opts)
    persons = app.Table("persons", partitions=ENRICHER_ROUTED.partitions, **table_opts)

    async def reject(step: str, rejection: Rejection, event: Any, message_id: str | None) -> None:
        m = event.message
        position = SourcePosition(m.topic, m.partition, m.offset, event.key, event.value)
        letter = dead_letter("enricher", step, rejection, position, message_id)
        await dead.send(key=event.key, value=serde.encode("dead_letter", letter, topic=dead.get_topic_name()))
        metrics.DEAD_LETTERS.labels(rejection.step or step, rejection.reason).inc()
        log.info(
            "dead letter", extra={"reason": rejection.reason, "offset": m.offset, "partition": m.partition}
        )

    @app.agent(valid)
    async def hop(stream: Any) -> None:
        # Every validated record goes through the single identity partition, keeping per-device order.
        async for event in stream.events():
            await identity_topic.send(key=event.key, value=event.value)

    @app.agent(identity_topic)
    async def resolve_identity(stream: Any) -> None:
        async for event in stream.events():
            started = time.perf_counter()
            try:
                record_type, record = serde.decode(event.value)
            except SerdeError as exc:
                await reject("decode", Rejection("undecodable", str(exc)), event, None)
                continue
            try:
                result = resolve(record_type, record, event.value, identity, s.enricher_conflict_policy)
            except Exception as exc:  # a bug must not stop the partition: park the record, say why
                log.exception("resolve failed", extra={"offset": event.message.offset})
                await reject("resolve", Rejection("internal_error", type(exc).__name__), event, None)
                continue
            if result.rejection is not None:
                await reject("resolve", result.rejection, event, record.get("message_id"))
                continue
            for env in result.routed:
                if env["kind"] == "merge":
                    metrics.MERGES.labels("identity").inc()
                value = serde.encode("enriched_event", env, topic=routed.get_topic_name(), check=False)
                await routed.send(key=env["person_id"].encode(), value=value)
            for key, value in result.writes.items():
                identity[key] = value
            metrics.RECORDS.labels("identity", record_type).inc()
            metrics.LATENCY.labels("identity").observe(time.perf_counter() - started)

    @app.agent(routed)
    async def person_stage(stream: Any) -> None:
        async for event in stream.events():
            started = time.perf_counter()
            _, env = serde.decode(event.value)  # written by resolve_identity: always decodes
            env["event_time"] = to_ms(env["event_time"])
            person = env["person_id"]
            dedup = _dedup_key(env)
            state = persons.get(person)
            if state is not None and dedup in state.get("seen", []):
                metrics.DUPLICATES.labels("person").inc()
                continue
            record = serde.decode(env["original"])[1] if env["original"] else None
            try:
                new_state, outputs = apply(state, env, record, cfg)
            except Exception as exc:  # a bug must not stop the partition: park the record, say why
                log.exception("person stage failed", extra={"offset": event.message.offset})
                await reject("person", Rejection("internal_error", type(exc).__name__), event, None)
                continue
            new_state["seen"] = [*(state or {}).get("seen", [])[-(SEEN_IDS - 1) :], dedup]
            for output, value in outputs:
                if output == "enriched":
                    data = serde.encode("enriched_event", value, topic=enriched.get_topic_name(), check=False)
                    await enriched.send(key=value["person_id"].encode(), value=data)
                elif output == "profile":
                    data = serde.encode("profile", value, topic=profiles.get_topic_name(), check=False)
                    await profiles.send(key=value["person_id"].encode(), value=data)
                else:
                    data = serde.encode("enriched_event", value, topic=routed.get_topic_name(), check=False)
                    await routed.send(key=value["person_id"].encode(), value=data)
                metrics.OUTPUTS.labels(output).inc()
            persons[person] = new_state
            metrics.RECORDS.labels("person", env["kind"]).inc()
            metrics.LATENCY.labels("person").observe(time.perf_counter() - started)

    @app.task
    async def ready() -> None:
        on_ready()

    return app


def to_ms(value: Any) -> int:
    """fastavro reads timestamp-millis as aware datetimes; state keeps epoch milliseconds."""
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)


def _dedup_key(env: dict[str, Any]) -> str:
    if env["kind"] in ("merge", "absorb"):
        return f"{env['kind']}:{env['details'].get('merged_from', '')}:{env['message_id']}"
    return env["message_id"]
