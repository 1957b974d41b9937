"""The faust app: three agents, two tables, and the order in which an outcome is performed.

    *.valid (N partitions) --hop--> enricher.identity (1 partition)
        --resolve_identity (table `identity`)--> enricher.routed (N partitions, key person id)
        --person_stage (table `persons`)-->  enriched, profiles, (merge hand-overs back to routed)
    the `wake` timer --> enricher.ticks (co-partitioned with routed) --person_stage--> session ends

Values are raw bytes in faust; decoding, the pure steps and encoding live in ``stages.py``.
Tables live in RocksDB (rocksdict) and are restored from their changelog topics after a restart
or when partitions move.

A session with no activity ends, and a GPS visit with no exit dwells, by the clock. Faust tables
are written only while an input event of their partition is processed, so time reaches the person
stage as messages: the timer sends a tick to partition p of ``enricher.ticks`` when a person of p
is due (``person.timer_due``; an in-memory
:class:`DueIndex`, rebuilt from the table at the first input of a partition after its
assignment; the timer sends a ``rebuild`` tick in case there is none).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import faust

from services.common.clock import Clock
from services.common.due import DueIndex
from services.common.faust_commits import confirmed_offset
from services.common.faust_service import RAW, faust_app
from services.common.follow import TopicFollower
from services.common.kafka import read_before
from services.common.logs import get_logger
from services.common.serde import Serde
from services.common.steps import SourcePosition
from services.common.topics import (
    DEAD_LETTERS,
    ENRICHED,
    ENRICHER_IDENTITY,
    ENRICHER_ROUTED,
    ENRICHER_TICKS,
    GEOFENCES,
    PROFILES,
    VALID_TOPICS,
    topic_name,
)
from services.enricher import metrics
from services.enricher.catalogue_feed import CatalogueFeed
from services.enricher.geofences import CatalogueFile, read_catalogue_file
from services.enricher.person import PersonConfig, timer_due
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
    )


def catalogue_file(s: EnricherSettings) -> CatalogueFile:
    """The entries of ``TAGSTREAM_ENRICHER_GEOFENCE_FILE`` (none if unset); CatalogueError names
    a bad entry."""
    path = s.enricher_geofence_file
    return read_catalogue_file(path) if path else CatalogueFile()


def build_app(
    s: EnricherSettings, on_ready: Callable[[], None] = lambda: None, geofences: CatalogueFile | None = None
) -> faust.App:
    """``geofences``: the catalogue file's entries, read already (else read here)."""
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
    ticks = app.topic(topic_name(ENRICHER_TICKS, s), partitions=ENRICHER_TICKS.partitions, **RAW)
    ticks_name = ticks.get_topic_name()
    person_inputs = app.topic(outputs["routed"].get_topic_name(), ticks_name, **RAW)
    table_opts: dict[str, Any] = {"default": None}  # untyped tables: json in changelogs
    clock = Clock(s.enricher_clock_file)
    # The file's entries overlaid by the geofences topic's (catalogue_feed.py); the follower
    # starts with the worker (the follow_catalogue task), not here.
    catalogue = CatalogueFeed(geofences if geofences is not None else catalogue_file(s))
    follower = TopicFollower(s, topic_name(GEOFENCES, s), catalogue.apply, "geofences")
    identity = app.Table("identity", partitions=ENRICHER_IDENTITY.partitions, **table_opts)
    persons = app.Table("persons", partitions=ENRICHER_ROUTED.partitions, **table_opts)
    stages = Stages(
        Serde(registry_url=s.schema_registry_url),
        person_config(s),
        s.enricher_conflict_policy,
        {name: topic.get_topic_name() for name, topic in outputs.items()},
        s.enricher_copy_window,
        clock.now_ms,
        catalogue.current,
    )
    timers = DueIndex()  # routed partition -> persons the clock has something for (timer_due), and when

    async def perform(outcome: Outcome, table: Any, acknowledged: bool = False) -> None:
        # Sends first, then state: if only one of them reaches Kafka before a crash, it should be
        # the outputs (a replay re-applies), not the state (a replay would be skipped).
        # ``acknowledged``: the state waits for the outputs' acks (ticks: nothing replays them).
        sent = [await outputs[send.output].send(key=send.key, value=send.value) for send in outcome.sends]
        if acknowledged:
            for ack in sent:
                await ack
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

    catalogue_ready = asyncio.Event()  # the person stage starts once the catalogue is read

    @app.task
    async def follow_catalogue() -> None:
        # The first points should meet the whole catalogue, not the part read so far.
        follower.start()
        await asyncio.to_thread(follower.wait_caught_up, s.enricher_catalogue_wait_s)
        current = catalogue.current()
        sizes = {"geofences": len(current.geofences), "beacons": len(current.beacons or {})}
        if not follower.caught_up:
            log.warning("geofences topic not read to its end: going on with what is read", extra=sizes)
        else:
            log.info("geofence catalogue read", extra=sizes)
        catalogue_ready.set()

    @app.agent(person_inputs)
    async def person_stage(stream: Any) -> None:
        await catalogue_ready.wait()
        async for event in stream.events():
            partition = event.message.partition
            if partition not in timers.built:  # first input of a partition since its assignment
                rebuild_timers(partition)
            if event.message.topic == ticks_name:
                await on_timers(partition, event.value)
                continue
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
            for person, state in outcome.writes.items():
                timers.set(partition, person, timer_due(state))

    def rebuild_timers(partition: int) -> None:
        # Faust delivers a partition's events only once its tables are recovered.
        for person, state in persons.items():
            if state and state.get("p") == partition:
                timers.set(partition, person, timer_due(state))
        timers.built.add(partition)
        log.info("timers rebuilt", extra={"partition": partition, "waiting": timers.pending()})

    async def on_timers(partition: int, value: bytes | None) -> None:
        timers.tick_handled(partition)
        metrics.TICKS.labels("rebuild" if value == b"rebuild" else "due").inc()
        due = timers.take_due(partition, clock.now_ms())
        await perform(stages.tick(persons, due), persons, acknowledged=True)
        for person in due:
            timers.set(partition, person, timer_due(persons.get(person)))

    @app.timer(interval=s.enricher_tick_seconds)
    async def wake() -> None:
        actives = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == ticks_name}
        for p, kind in timers.ticks_to_send(actives, clock.now_ms()):
            await ticks.send(value=kind.encode(), partition=p)
        metrics.TIMERS.set(timers.pending())
        catalogue.current()  # a changed catalogue is rebuilt (and its gauge set) without waiting for a point

    @app.on_partitions_revoked.connect
    async def revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        # Forget at once: if the partition comes back, another instance may have changed it meanwhile.
        for tp in revoked:
            if tp.topic == ticks_name:
                timers.forget(tp.partition)

    async def crash_after_state_write(outcome: Outcome, table: Any) -> None:
        # Test hook (TAGSTREAM_ENRICHER_CRASH_AFTER_STATE_WRITE): the worst moment for a crash, the
        # state is in its changelog and the outputs never left.
        for key, value in outcome.writes.items():
            table[key] = value
        await app.producer.flush()
        os._exit(70)

    @app.task
    async def ready() -> None:
        await catalogue_ready.wait()
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
