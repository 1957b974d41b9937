"""The faust app: one agent over five co-partitioned topics, three tables, two timers.

    enriched, segment-membership, profiles, trigger.ticks, trigger.merges (6 partitions, key person id)
        --decide (tables persons, states, broadcasts)-->
    outbound.<channel>, delivery-receipts (sent), dead-letters, trigger.merges

A merge hand-over is sent to ``trigger.merges`` keyed by person id with faust's partitioner,
which is the enricher's for ``enriched`` (murmur2), so it reaches the partition that owns that
person's state (docs/campaigns.md, "Merges").

Inputs are handled in batches (``TAGSTREAM_TRIGGER_BATCH_MAX`` inputs, or what came within
``TAGSTREAM_TRIGGER_BATCH_WITHIN_S``): each input is decided in order against the tables plus the
batch's own decisions not yet written (``batch.py``), then all outputs are sent, their acks
awaited once, and only then the states written. Faust acks the batch's events after that, so an
offset is never committed past an input whose messages are not acknowledged.

Faust tables can only be written while an input event is processed (the changelog partition is
the event's partition), so time reaches the agent as messages: the ``wake`` timer sends a tick
to ``trigger.ticks`` partition p when a person of p is due (from the in-memory :class:`DueIndex`)
or a broadcast's time came, and the agent handles it like any input of partition p. After an
assignment, the first input of a partition (the timer sends a ``rebuild`` tick in case there is
none) first rebuilds the index from ``states`` (faust delivers it only after the tables are
recovered) and reads back the message ids at the end of the partition's outbound topics
(``readback.py``), before anything of that partition is decided.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import faust
from faust.types import EventT

from services.common.clock import Clock
from services.common.due import DueIndex
from services.common.faust_service import RAW, current_event, faust_app
from services.common.logs import get_logger
from services.common.serde import Serde
from services.common.steps import SourcePosition
from services.common.topics import (
    DEAD_LETTERS,
    DELIVERY_RECEIPTS,
    ENRICHED,
    OUTBOUND_TOPICS,
    PROFILES,
    SEGMENT_MEMBERSHIP,
    TRIGGER_MERGES,
    TRIGGER_TICKS,
    topic_name,
)
from services.trigger import metrics
from services.trigger.batch import Batch
from services.trigger.core import Context
from services.trigger.definitions import CampaignSet, reload_campaigns
from services.trigger.readback import recent_message_ids
from services.trigger.settings import TriggerSettings, default_campaigns
from services.trigger.stages import Outcome, Stages, tick_kind, tick_value

log = get_logger("trigger")


class Campaigns:
    """The current campaign set, re-read from the file by the reload timer."""

    def __init__(self, s: TriggerSettings) -> None:
        self.file, self.tracking = s.campaigns_file, s.tracking()
        self.current: CampaignSet = default_campaigns()
        self.reload()

    def reload(self) -> None:
        if not self.file.exists():
            return
        result = reload_campaigns(self.file, self.current)
        if result.problems:
            log.warning("campaign file refused, previous campaigns kept", extra={"problems": result.problems})
        elif result.diff and (result.diff.added or result.diff.changed or result.diff.removed):
            log.info("campaigns loaded", extra=vars(result.diff))
        self.current = result.campaigns or self.current

    def context(self) -> Context:
        return Context(self.current, self.tracking)


def build_app(s: TriggerSettings, on_ready: Callable[[], None] = lambda: None) -> faust.App:
    # at_least_once (faust's default): its exactly_once fences the timer's tick sends and
    # cannot produce to topics it does not consume (docs/campaigns.md, "Exactly once").
    app = faust_app(
        s,
        s.full_app_id,
        s.trigger_state_dir,
        s.trigger_broker_session_timeout_s,
        s.trigger_replication_factor,
    )
    names = {
        spec.name: topic_name(spec, s)
        for spec in (ENRICHED, SEGMENT_MEMBERSHIP, PROFILES, TRIGGER_TICKS, TRIGGER_MERGES)
    }
    inputs = app.topic(*names.values(), **RAW)
    ticks = app.topic(names[TRIGGER_TICKS.name], partitions=TRIGGER_TICKS.partitions, **RAW)
    outputs = {
        spec.name: app.topic(topic_name(spec, s), **RAW)
        for spec in (*OUTBOUND_TOPICS, DELIVERY_RECEIPTS, DEAD_LETTERS)
    }
    outputs[TRIGGER_MERGES.name] = app.topic(
        names[TRIGGER_MERGES.name], partitions=TRIGGER_MERGES.partitions, **RAW
    )
    table_opts: dict[str, Any] = {"default": None, "partitions": ENRICHED.partitions}  # json in changelogs
    tables = {name: app.Table(name, **table_opts) for name in ("persons", "states", "broadcasts")}
    persons, states, broadcasts = tables["persons"], tables["states"], tables["broadcasts"]
    campaigns = Campaigns(s)
    clock = Clock(s.trigger_clock_file)
    stages = Stages(
        Serde(registry_url=s.schema_registry_url),
        campaigns.context,
        {name: topic.get_topic_name() for name, topic in outputs.items()},
        s.trigger_profile_wait_ms,
    )
    index = DueIndex()
    kill_after = s.trigger_test_kill_after_message

    async def perform(batch: Batch[EventT]) -> None:
        # Outputs acknowledged first, then state: a state that knows a message implies the message
        # is on its topic. A crash in between leaves messages the states do not know; the replay
        # recognises them by the read-back of the partition's outbound tails (rebuild). Every send
        # of the batch is handed to the producer before the first ack is awaited: one round trip
        # per batch, not per input.
        acks = [await outputs[x.output].send(key=x.key, value=x.value) for x in batch.sends]
        for ack in acks:
            await ack
        if kill_after and any(x.message_id == kill_after for x in batch.sends):
            log.warning("test hook: SIGKILL after the message, before the state")
            os.kill(os.getpid(), signal.SIGKILL)
        for event, table, key, value in batch.writes():
            with current_event(event):  # faust writes the changelog partition of the current event
                tables[table][key] = value
        for event, person, due in batch.due():
            index.set(event.message.partition, person, due)
        if batch.inputs:
            metrics.BATCH_INPUTS.observe(batch.inputs)

    async def rebuild(partition: int) -> None:
        produced = await asyncio.to_thread(
            recent_message_ids, s, stages.serde, partition, s.trigger_readback_records
        )
        stages.recently_produced[partition] = produced or set()
        for _, entry in states.items():
            if entry and entry.get("partition") == partition:
                index.set(partition, entry["person"], entry.get("due"))
        index.broadcasts_done[partition] = set(broadcasts.get(f"p{partition}") or [])
        index.built.add(partition)
        log.info(
            "due index rebuilt",
            extra={"partition": partition, "due": index.pending(), "read_back": len(produced or ())},
        )

    async def on_tick(event: EventT, source: SourcePosition) -> None:
        """Due persons and due broadcasts of the tick's partition: one batch, performed at once."""
        p, kind = source.partition, tick_kind(source.value)
        index.tick_handled(p)
        metrics.TICKS.labels(kind).inc()
        now = clock.now()
        batch: Batch[EventT] = Batch(tables)
        for person in index.take_due(p, clock.now_ms()):
            batch.add(event, stages.tick_person(person, batch.persons, batch.states, source, now))
        done = index.broadcasts_done.setdefault(p, set())
        went: dict[str, int] = {}  # occurrence key -> audience
        for campaign_id, key in stages.due_broadcasts(done, clock.now_ms()):
            audience = [e["person"] for _, e in persons.items() if e and e.get("partition") == p]
            for person in audience:
                sent = stages.broadcast_person(campaign_id, person, batch.persons, batch.states, source, now)
                batch.add(event, sent)
            went[key] = len(audience)
            batch.add(event, Outcome(writes=[("broadcasts", f"p{p}", sorted(done | went.keys()))]))
        await perform(batch)
        done.update(went)
        for key, audience in went.items():
            log.info("broadcast sent", extra={"campaign": key, "partition": p, "audience": audience})

    def revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        # Forget at once: if the partition comes back, another owner may have changed it meanwhile.
        for tp in revoked:
            if tp.topic == ticks.get_topic_name():
                index.forget(tp.partition)
                stages.recently_produced.pop(tp.partition, None)

    app.on_partitions_revoked.connect(revoked)

    def decide_one(source: SourcePosition, batch: Batch[EventT]) -> Outcome:
        """One input against the tables as the batch so far left them."""
        persons, states, now = batch.persons, batch.states, clock.now()
        if source.topic == names[PROFILES.name]:
            return stages.profile(persons, states, source, now)
        if source.topic == names[SEGMENT_MEMBERSHIP.name]:
            return stages.segment(persons, states, source, now)
        if source.topic == names[ENRICHED.name]:
            return stages.enriched(persons, states, source, now)
        return stages.handover(persons, states, source, now)  # trigger.merges

    @app.agent(inputs)
    async def decide(stream: Any) -> None:
        # faust acks a batch's events (so may commit their offsets) only when this loop asks for
        # the next batch: after their outputs are acknowledged and their states written.
        async for events in stream.take_events(s.trigger_batch_max, s.trigger_batch_within_s):
            batch: Batch[EventT] = Batch(tables)
            for event in events:
                m = event.message
                source = SourcePosition(m.topic, m.partition, m.offset, event.key, event.value)
                if m.partition not in index.built:  # first input of a partition since its assignment
                    await rebuild(m.partition)  # (none of the batch so far is of this partition)
                if m.topic == names[TRIGGER_TICKS.name]:
                    await perform(batch)  # a tick reads the due index: the batch so far goes first
                    batch = Batch(tables)
                    await on_tick(event, source)
                else:
                    batch.add(event, decide_one(source, batch))
            await perform(batch)

    @app.timer(interval=s.trigger_tick_seconds)
    async def wake() -> None:
        actives = {
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == ticks.get_topic_name()
        }
        now_ms = clock.now_ms()

        def broadcast_due(p: int) -> bool:
            return bool(stages.due_broadcasts(index.broadcasts_done.get(p, set()), now_ms))

        for p, kind in index.ticks_to_send(actives, now_ms, broadcast_due):
            await ticks.send(key=None, value=tick_value(kind, now_ms), partition=p)
        metrics.DUE_PERSONS.set(index.pending())
        metrics.NOW_SECONDS.set(now_ms / 1000)  # after the ticks: anything due at now_ms has one
        if actives and actives <= index.built:
            on_ready()

    @app.timer(interval=s.trigger_reload_seconds)
    async def reload() -> None:
        campaigns.reload()

    return app
