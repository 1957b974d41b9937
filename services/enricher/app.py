"""The faust app: three agents, two tables, and the order in which an outcome is performed.

    *.valid (N partitions) --hop--> enricher.identity (1 partition)
        --resolve_identity (table `identity`)--> enricher.routed (N partitions, key person id)
        --person_stage (table `persons`)-->  enriched, profiles, (merge hand-overs back to routed)

Values are raw bytes in faust; decoding, the pure steps and encoding live in ``stages.py``.
Tables live in RocksDB (rocksdict) and are restored from their changelog topics after a restart
or when partitions move.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import faust

from services.common.faust_commits import confirmed_offset
from services.common.faust_service import RAW, faust_app
from services.common.kafka import read_before
from services.common.logs import get_logger
from services.common.serde import Serde
from services.common.steps import SourcePosition
from services.common.topics import (
    DEAD_LETTERS,
    ENRICHED,
    ENRICHER_IDENTITY,
    ENRICHER_ROUTED,
    PROFILES,
    VALID_TOPICS,
    topic_name,
)
from services.enricher.geofences import load_catalogue
from services.enricher.person import PersonConfig
from services.enricher.readback import produced
from services.enricher.settings import EnricherSettings
from services.enricher.stages import Outcome, Stages

log = get_logger("enricher")


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
    app = faust_app(
        s,
        s.full_app_id,
        s.enricher_state_dir,
        s.enricher_broker_session_timeout_s,
        s.enricher_replication_factor,
        broker_commit_interval=s.enricher_commit_interval_s,
    )
    valid = app.topic(*(topic_name(t, s) for t in VALID_TOPICS), **RAW)
    identity_topic = app.topic(
        topic_name(ENRICHER_IDENTITY, s), partitions=ENRICHER_IDENTITY.partitions, **RAW
    )
    outputs = {
        "routed": app.topic(topic_name(ENRICHER_ROUTED, s), partitions=ENRICHER_ROUTED.partitions, **RAW),
        "enriched": app.topic(topic_name(ENRICHED, s), **RAW),
        "profiles": app.topic(topic_name(PROFILES, s), **RAW),
        "dead-letters": app.topic(topic_name(DEAD_LETTERS, s), **RAW),
    }
    table_opts: dict[str, Any] = {"default": None}  # untyped tables: json in changelogs
    identity = app.Table("identity", partitions=ENRICHER_IDENTITY.partitions, **table_opts)
    persons = app.Table("persons", partitions=ENRICHER_ROUTED.partitions, **table_opts)
    stages = Stages(
        Serde(registry_url=s.schema_registry_url),
        person_config(s),
        s.enricher_conflict_policy,
        {name: topic.get_topic_name() for name, topic in outputs.items()},
        s.enricher_copy_window,
    )

    async def perform(outcome: Outcome, table: Any) -> None:
        # Sends first, then state: if only one of them reaches Kafka before a crash, it should be
        # the outputs (a replay re-applies), not the state (a replay would be skipped).
        for send in outcome.sends:
            await outputs[send.output].send(key=send.key, value=send.value)
        for key, value in outcome.writes.items():
            table[key] = value

    @app.agent(valid)
    async def hop(stream: Any) -> None:
        # Every validated record goes through the single identity partition, keeping per-device order.
        async for event in stream.events():
            await identity_topic.send(key=event.key, value=event.value)

    @app.agent(identity_topic)
    async def resolve_identity(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            if stages.hop_copies.needs_seed(m.topic, m.partition, m.offset):
                read_back_hop_copies(m.topic, m.partition, m.offset)
            await perform(stages.identity(identity, _position(event), _committed(app, event)), identity)

    def read_back_hop_copies(topic: str, partition: int, offset: int) -> None:
        # Blocking on the event loop like the person stage's read-back (below): once per start or
        # rebalance, well under a second for the default window.
        started = time.monotonic()
        earlier = read_before(s, topic, partition, offset, s.enricher_copy_window, timeout=5.0)
        if earlier is None:
            log.warning("identity read-back timed out: copies may pass", extra={"offset": offset})
        stages.hop_copies.seed(topic, partition, earlier or [])
        seconds = round(time.monotonic() - started, 2)
        records = len(earlier or [])
        log.info("identity read back", extra={"offset": offset, "records": records, "seconds": seconds})

    crash_at = s.enricher_crash_after_state_write

    @app.agent(outputs["routed"])
    async def person_stage(stream: Any) -> None:
        async for event in stream.events():
            outcome = stages.person(persons, _position(event), _committed(app, event))
            if outcome.read_back is not None:  # the first replay of an applied record here
                partition, started = outcome.read_back, time.monotonic()
                # Blocking on purpose (about 0.5 s, once per partition and process): run in a
                # thread (asyncio.to_thread) the worker stopped processing after the restart in
                # the kill -9 test, 4 runs of 4; cause not found.
                records = s.enricher_readback_records  # 0 (default): re-send all, consumers drop copies
                found = produced(s, stages.serde, partition, records) if records else set()
                stages.produced[partition] = found
                log.info(
                    "enriched read back",
                    extra={
                        "partition": partition,
                        "found": len(stages.produced[partition]),
                        "seconds": round(time.monotonic() - started, 2),
                    },
                )
                outcome = stages.person(persons, _position(event), _committed(app, event))
            if crash_at and crash_at in outcome.message_ids:
                await crash_after_state_write(outcome, persons)
            await perform(outcome, persons)

    async def crash_after_state_write(outcome: Outcome, table: Any) -> None:
        # Test hook (TAGSTREAM_ENRICHER_CRASH_AFTER_STATE_WRITE): the worst moment for a crash, the
        # state is in its changelog and the outputs never left.
        for key, value in outcome.writes.items():
            table[key] = value
        await app.producer.flush()
        os._exit(70)

    @app.task
    async def ready() -> None:
        on_ready()

    return app


def _committed(app: faust.App, event: Any) -> int | None:
    """The input partition's committed offset as the broker confirmed it (None before the first
    commit or seek): no replay reaches below it, so the person outbox and the identity versions
    forget what is older (``faust_commits.confirmed_offset``)."""
    return confirmed_offset(app.consumer, event.message.tp)


def _position(event: Any) -> SourcePosition:
    m = event.message
    return SourcePosition(m.topic, m.partition, m.offset, event.key, event.value)
