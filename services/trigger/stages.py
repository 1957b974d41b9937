"""The trigger's record paths with their edges, without faust: bytes in -> decode -> core decision
-> encode -> what to send and what to write. Tables are plain mappings here, so the whole path
is testable with dicts.

    profiles            -> keep the profile's fields              (table ``persons``)
    segment-membership  -> keep the membership -> core.on_event   (``persons``, ``states``)
    enriched            -> PersonEvent -> core.on_event           (``states``)
    a tick (partition)  -> core.on_tick for each due person, core.on_broadcast for due broadcasts

The app (``app.py``) performs an :class:`Outcome` in order: every send, then the table writes,
then the due index. Faust flushes the producer before it commits an input offset, so a crash
replays the input rather than losing its outputs. ``states`` entries remember the inputs
already applied (``seen``) and the message ids already produced (``emitted``): a replay of an
applied input changes nothing, and the core's deterministic ids make any re-emission an exact
duplicate (docs/campaigns.md, "Exactly once").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.common.kafka import record_key
from services.common.logs import get_logger
from services.common.serde import Serde, SerdeError
from services.common.steps import Rejection, SourcePosition, dead_letter
from services.trigger import metrics
from services.trigger.core import Context, Emit, Reject, on_broadcast, on_event, on_tick
from services.trigger.core import Outcome as Decision
from services.trigger.inputs import LocationChange, PersonEvent, PersonView
from services.trigger.records import person_event, segment_event
from services.trigger.state import PersonState, from_ms, to_ms
from services.trigger.triggers import BroadcastTrigger
from services.trigger.view import apply_segment, from_profile, person_view

log = get_logger("trigger")
SEEN_IDS = 256  # per person: inputs already applied (a replay after a crash is skipped)
EMITTED_IDS = 256  # per person: message ids already produced (never produced twice by one state)
GEOFENCE = {"geofence_entered": "entered", "geofence_exited": "exited", "geofence_dwelled": "dwelled"}
EVENT_KINDS = ("event", "app_launch", "tag")  # enriched kinds that carry an original record to trigger on


@dataclass(frozen=True)
class Send:
    output: str  # a topic spec name: outbound.<channel>, delivery-receipts, dead-letters
    key: bytes | None
    value: bytes


@dataclass
class Outcome:
    sends: list[Send] = field(default_factory=list)
    writes: list[tuple[str, str, Any]] = field(default_factory=list)  # (table, key, value)
    due: dict[str, int | None] = field(default_factory=dict)  # person -> next on_tick time


Decide = Callable[[PersonView, PersonState], Decision]


def to_ms_any(value: Any) -> int:
    return (
        to_ms(value if value.tzinfo else value.replace(tzinfo=UTC))
        if isinstance(value, datetime)
        else int(value)
    )


class Stages:
    def __init__(self, serde: Serde, context: Callable[[], Context], topics: Mapping[str, str]) -> None:
        self.serde, self.context, self.topics = serde, context, topics  # topics: spec name -> broker name

    # -- inputs -------------------------------------------------------------------------------
    def profile(self, persons: Mapping[str, Any], source: SourcePosition) -> Outcome:
        """Keep the fields of the person's latest profile (the core reads them as PersonView)."""
        decoded = self._decode(source, "profile")
        if isinstance(decoded, Outcome):
            return decoded
        person = decoded["person_id"]
        stored = dict(persons.get(person) or {})
        stored.update(person=person, partition=source.partition, profile=from_profile(decoded))
        metrics.INPUTS.labels("profile").inc()
        return Outcome(writes=[("persons", person, stored)])

    def segment(
        self, persons: Mapping[str, Any], states: Mapping[str, Any], source: SourcePosition, now: datetime
    ) -> Outcome:
        """Keep the membership (a later change wins), then let segment triggers fire."""
        decoded = self._decode(source, "segment_membership")
        if isinstance(decoded, Outcome):
            return decoded
        person, when = decoded["person_id"], to_ms_any(decoded["change_time"])
        stored = dict(persons.get(person) or {})
        segments = dict(stored.get("segments") or {})
        metrics.INPUTS.labels("segment").inc()
        if not apply_segment(segments, decoded["segment_id"], decoded["change"], when):
            metrics.DUPLICATES.labels("stale_segment_change").inc()
            return Outcome()
        stored.update(person=person, partition=source.partition, segments=segments)
        event = segment_event(
            decoded["change_id"], person, decoded["segment_id"], decoded["change"] == "entered", from_ms(when)
        )
        ctx = self.context()
        outcome = self._decide(
            person, stored, states, lambda v, s: on_event(event, v, s, now, ctx), source, event.event_id
        )
        outcome.writes.insert(0, ("persons", person, stored))
        return outcome

    def enriched(
        self, persons: Mapping[str, Any], states: Mapping[str, Any], source: SourcePosition, now: datetime
    ) -> Outcome:
        """An enriched event, tag or geofence transition -> the campaigns it starts, converts or times."""
        env = self._decode(source, "enriched_event")
        if isinstance(env, Outcome):
            return env
        event = self._person_event(env)
        if isinstance(event, Rejection):
            return self._reject("to_person_event", event, source, env["message_id"])
        metrics.INPUTS.labels("enriched" if event else "enriched_ignored").inc()
        if event is None:
            return Outcome()
        person, ctx = env["person_id"], self.context()
        return self._decide(
            person,
            persons.get(person),
            states,
            lambda v, s: on_event(event, v, s, now, ctx),
            source,
            event.event_id,
        )

    def _person_event(self, env: dict[str, Any]) -> PersonEvent | Rejection | None:
        person, kind = env["person_id"], env["kind"]
        if kind in GEOFENCE:
            d = env.get("details") or {}
            if not d.get("region_id"):
                return None
            dwell = float(d["duration_ms"]) / 1000 if d.get("duration_ms") else None
            change = LocationChange(GEOFENCE[kind], d["region_id"], d.get("region_kind"), dwell)  # type: ignore[arg-type]
            when = from_ms(to_ms_any(env["event_time"]))
            return PersonEvent(env["message_id"], person, when, "location", location=change)
        if kind not in EVENT_KINDS or not env.get("original"):
            return None  # sessions, receipts, profile updates, merges, raw GPS points: nothing to trigger
        try:
            record_type, record = self.serde.decode(env["original"])
        except SerdeError as exc:
            return Rejection("undecodable", f"original: {exc}", "decode")
        return person_event(record_type, record, person)

    # -- time ---------------------------------------------------------------------------------
    def tick_person(
        self,
        person: str,
        persons: Mapping[str, Any],
        states: Mapping[str, Any],
        source: SourcePosition,
        now: datetime,
    ) -> Outcome:
        """A due person: timers that expired, delayed or held sends that may go now."""
        ctx = self.context()
        return self._decide(person, persons.get(person), states, lambda v, s: on_tick(v, s, now, ctx), source)

    def due_broadcasts(self, done: set[str], now_ms: int) -> list[tuple[str, str]]:
        """(campaign id, occurrence key) of enabled broadcasts whose time came and that have not run."""
        found = []
        for campaign in self.context().campaigns.campaigns.values():
            trigger = campaign.trigger
            if isinstance(trigger, BroadcastTrigger) and campaign.enabled and to_ms(trigger.at) <= now_ms:
                key = f"{campaign.id}@{trigger.at.isoformat()}"
                if key not in done:
                    found.append((campaign.id, key))
        return found

    def broadcast_person(
        self,
        campaign_id: str,
        person: str,
        persons: Mapping[str, Any],
        states: Mapping[str, Any],
        source: SourcePosition,
        now: datetime,
    ) -> Outcome:
        ctx = self.context()
        decide: Decide = lambda v, s: on_broadcast(campaign_id, v, s, now, ctx)  # noqa: E731
        return self._decide(person, persons.get(person), states, decide, source)

    # -- one decision -------------------------------------------------------------------------
    def _decide(
        self,
        person: str,
        stored_person: dict[str, Any] | None,
        states: Mapping[str, Any],
        decide: Decide,
        source: SourcePosition,
        input_id: str | None = None,
    ) -> Outcome:
        started = time.perf_counter()
        entry = states.get(person) or {}
        seen: list[str] = list(entry.get("seen") or [])
        if input_id is not None and input_id in seen:
            metrics.DUPLICATES.labels("input").inc()
            return Outcome()
        try:
            state = PersonState.from_bytes(entry["state"].encode() if entry.get("state") else None)
            decision = decide(person_view(person, stored_person), state)
        except Exception as exc:  # a bug must not stop the partition: park the input, say why
            log.exception("decision failed", extra={"offset": source.offset})
            return self._reject("decide", Rejection("internal_error", type(exc).__name__), source, input_id)
        outcome, emitted, counted = Outcome(), list(entry.get("emitted") or []), []
        for action in decision.actions:
            if isinstance(action, Emit):
                msg_id = action.message["message_id"]
                if msg_id in emitted:
                    metrics.DUPLICATES.labels("message").inc()
                    continue
                outcome.sends.extend(self._emit(action))
                emitted.append(msg_id)
            elif isinstance(action, Reject):
                letter = dead_letter("trigger", "render", action.rejection, source, action.message_id)
                value = self.serde.encode("dead_letter", letter, topic=self.topics["dead-letters"])
                outcome.sends.append(Send("dead-letters", person.encode(), value))
                log.info(
                    "dead letter", extra={"reason": action.rejection.reason, "campaign": action.campaign_id}
                )
            counted.append(action)
        metrics.count(counted)
        if input_id is not None:
            seen = [*seen[-(SEEN_IDS - 1) :], input_id]
        due = decision.state.next_due_ms()
        outcome.writes.append(
            (
                "states",
                person,
                {
                    "person": person,
                    "partition": source.partition,
                    "state": decision.state.to_bytes().decode(),
                    "due": due,
                    "seen": seen,
                    "emitted": emitted[-EMITTED_IDS:],
                },
            )
        )
        outcome.due[person] = due
        metrics.DECISION_SECONDS.observe(time.perf_counter() - started)
        return outcome

    def _emit(self, action: Emit) -> list[Send]:
        name = action.topic.name
        value = self.serde.encode("outbound_message", action.message, topic=self.topics[name], check=False)
        sends = [Send(name, action.key.encode(), value)]
        if action.receipt is not None:
            receipt = self.serde.encode(
                "delivery_receipt", action.receipt, topic=self.topics["delivery-receipts"], check=False
            )
            sends.append(Send("delivery-receipts", record_key(action.receipt), receipt))
        return sends

    # -- edges --------------------------------------------------------------------------------
    def _decode(self, source: SourcePosition, expected: str) -> dict[str, Any] | Outcome:
        try:
            record_type, record = self.serde.decode(source.value)
        except SerdeError as exc:
            return self._reject("decode", Rejection("undecodable", str(exc)), source, None)
        if record_type != expected:
            rejection = Rejection("schema_violation", f"expected {expected}, got {record_type}")
            return self._reject("decode", rejection, source, record.get("message_id"))
        return record

    def _reject(
        self, step: str, rejection: Rejection, source: SourcePosition, message_id: str | None
    ) -> Outcome:
        letter = dead_letter("trigger", step, rejection, source, message_id)
        value = self.serde.encode("dead_letter", letter, topic=self.topics["dead-letters"])
        metrics.REJECTED.labels(rejection.step or step, rejection.reason).inc()
        log.info("dead letter", extra={"reason": rejection.reason, "offset": source.offset})
        return Outcome(sends=[Send("dead-letters", source.key, value)])


def tick_value(kind: str, now_ms: int) -> bytes:
    """A tick's bytes: ``rebuild`` (index this partition from the table) or ``due``."""
    return json.dumps({"kind": kind, "sent_ms": now_ms}).encode()


def tick_kind(value: bytes | None) -> str:
    try:
        return str(json.loads(value or b"{}").get("kind", "due"))
    except ValueError:
        return "due"
