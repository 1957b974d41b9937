"""The faust app: one agent over `enriched`, `segmenter.ticks` and `segmenter.merges`, one table,
two timers.

    enriched (6 partitions, key person id) ─┐
    segmenter.ticks (6, one tick per owned ├─ segment (table `persons`) ─→ segment-membership
       partition per tick interval)        │                            ├→ dead-letters
    segmenter.merges (6, key person id)    ─┘                            └→ segmenter.merges

The inputs have the same partition count, so faust assigns partition p of each (and of the
table's changelog) to the same worker: a tick on partition p advances the engine of partition p,
and its table writes land in changelog partition p. A merge hand-over is sent keyed by person id
with faust's partitioner, which is the enricher's for `enriched` (murmur2), so it reaches the
partition that owns that person (docs/segments.md, "Merges"). Faust's own timers cannot write tables (no
partition context), hence the tick topic. Values are raw bytes; ``stream.py`` decodes and encodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust

from services.common.clickhouse import client_for
from services.common.clock import Clock
from services.common.faust_service import RAW, faust_app
from services.common.serde import Serde
from services.common.steps import SourcePosition
from services.common.topics import (
    DEAD_LETTERS,
    ENRICHED,
    SEGMENT_MEMBERSHIP,
    SEGMENTER_MERGES,
    SEGMENTER_TICKS,
    topic_name,
)
from services.segmenter.seed import seeder
from services.segmenter.settings import SegmenterSettings
from services.segmenter.stream import Outcome, Segmenter
from services.segmenter.watch import Watcher


def build_app(s: SegmenterSettings, on_ready: Callable[[], None] = lambda: None) -> faust.App:
    watcher = Watcher(s.definitions_path)
    segments = watcher.initial()  # a bad file at start is an error: there is nothing to run with
    app = faust_app(
        s,
        s.full_app_id,
        s.segmenter_state_dir,
        s.segmenter_broker_session_timeout_s,
        s.segmenter_replication_factor,
    )
    enriched_name = topic_name(ENRICHED, s)
    ticks_name = topic_name(SEGMENTER_TICKS, s)
    merges_name = topic_name(SEGMENTER_MERGES, s)
    source = app.topic(enriched_name, ticks_name, merges_name, **RAW)
    ticks = app.topic(ticks_name, partitions=SEGMENTER_TICKS.partitions, **RAW)
    outputs = {
        "segment-membership": app.topic(topic_name(SEGMENT_MEMBERSHIP, s), **RAW),
        "dead-letters": app.topic(topic_name(DEAD_LETTERS, s), **RAW),
        "segmenter.merges": app.topic(merges_name, partitions=SEGMENTER_MERGES.partitions, **RAW),
    }
    persons = app.Table("persons", partitions=ENRICHED.partitions, default=None)  # json in the changelog
    connect = (lambda: client_for(s)) if s.clickhouse_url else None
    core = Segmenter(
        Serde(registry_url=s.schema_registry_url),
        {name: topic.get_topic_name() for name, topic in outputs.items()},
        segments,
        seeder(connect, s.segmenter_clickhouse_database),
        Clock(s.segmenter_clock_file).now_ms,
    )

    async def perform(outcome: Outcome) -> None:
        # Sends first, then state: a crash in between replays the record, and the offset stored
        # with the state tells a replay from a new record (stream.py). Not awaited: awaiting each
        # send's acknowledgement here stalled the agent after a partition takeover (the
        # two-instance test timed out in CI twice, 2026-12-01), so a row's changelog record can
        # still be acknowledged before a change sent just before it; a SIGKILL between the two
        # can lose that change (seen once by the oracle's SIGKILL variant; docs/segments.md).
        for send in outcome.sends:
            await outputs[send.output].send(key=send.key, value=send.value)
        for key, value in outcome.writes.items():
            persons[key] = value

    @app.agent(source)
    async def segment(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            if m.topic == ticks_name:
                await perform(core.tick(persons, m.partition))
            elif m.topic == merges_name:
                position = SourcePosition(m.topic, m.partition, m.offset, event.key, event.value)
                await perform(core.handover(persons, position))
            else:
                await perform(
                    core.record(
                        persons, SourcePosition(m.topic, m.partition, m.offset, event.key, event.value)
                    )
                )

    @app.timer(interval=s.segmenter_tick_seconds)
    async def tick() -> None:
        for tp in app.consumer.assignment():
            if tp.topic == enriched_name:
                await ticks.send(value=b"", partition=tp.partition)
                # An empty record on segmenter.merges too, so every partition of it is read and
                # committed from the start: after a rebalance, hand-overs sent to a partition
                # that had never been committed were not read (the oracle's two-instance run).
                await outputs["segmenter.merges"].send(value=b"", partition=tp.partition)

    @app.timer(interval=s.segmenter_reload_seconds)
    async def reload_definitions() -> None:
        new = watcher.poll()
        if new is not None:
            core.set_definitions(new)

    @app.on_partitions_revoked.connect
    async def revoked(sender: Any, revoked: set[Any], **_: Any) -> None:
        core.forget({tp.partition for tp in revoked if tp.topic == enriched_name})

    @app.task
    async def ready() -> None:
        on_ready()

    return app
