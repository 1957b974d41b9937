"""The trigger's record paths with their edges, without faust: bytes in -> decode -> core decision
-> encode -> what to send and what to write. Tables are plain mappings here, so the whole path
is testable with dicts.

    profiles            -> keep the profile's fields              (table ``persons``)
    segment-membership  -> keep the membership -> core.on_event   (``persons``, ``states``)
    enriched            -> PersonEvent -> core.on_event           (``states``)
    a tick (partition)  -> core.on_tick for each due person, core.on_broadcast for due broadcasts
    trigger.merges      -> a merge hand-over step: request, fold (merge.fold), forwarded event

The app (``app.py``) performs an :class:`Outcome` in order: every send, then the table writes,
then the due index. Faust flushes the producer before it commits an input offset, so a crash
replays the input rather than losing its outputs. ``states`` entries remember the inputs
already applied (``seen``) and the message ids already produced (``emitted``): a replay of an
applied input changes nothing, and the core's deterministic ids make any re-emission an exact
duplicate (docs/campaigns.md, "Exactly once").
"""

from __future__ import annotations

import base64
import json
import time
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
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
from services.trigger.merge import fold
from services.trigger.records import person_event, segment_event
from services.trigger.state import PersonState, from_ms, to_ms
from services.trigger.triggers import BroadcastTrigger
from services.trigger.view import apply_segment, from_profile, person_view

log = get_logger("trigger")
SEEN_IDS = 256  # per person: inputs already applied (a replay after a crash is skipped)
EMITTED_IDS = 256  # per person: message ids already produced (never produced twice by one state)
GEOFENCE = {"geofence_entered": "entered", "geofence_exited": "exited", "geofence_dwelled": "dwelled"}
EVENT_KINDS = ("event", "app_launch", "tag")  # enriched kinds that carry an original record to trigger on
# trigger.merges: the fields each hand-over step needs (docs/campaigns.md, "Merges")
HANDOVER_FIELDS = {
    "request": {"from", "into", "id"},
    "fold": {"from", "into", "id", "state", "seen", "parked"},
    "event": {"from", "into", "topic", "offset", "value"},
}
PARKED_MAX = 64  # per person: enriched events waiting for the profile that includes them
FOLDS_KEPT = 16  # per person: folds received, with the pending sends each brought (see _fold)


@dataclass(frozen=True)
class Send:
    output: str  # a topic spec name: outbound.<channel>, delivery-receipts, dead-letters
    key: bytes | None
    value: bytes
    message_id: str | None = None  # outbound messages only


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
    def __init__(
        self,
        serde: Serde,
        context: Callable[[], Context],
        topics: Mapping[str, str],
        profile_wait_ms: int = 0,
    ) -> None:
        self.serde, self.context, self.topics = serde, context, topics  # topics: spec name -> broker name
        self.profile_wait_ms = profile_wait_ms  # 0: never wait for a profile
        # partition -> message ids found at the end of its outbound partitions when it was taken over
        self.recently_produced: dict[int, set[str]] = {}

    # -- inputs -------------------------------------------------------------------------------
    def profile(
        self, persons: Mapping[str, Any], states: Mapping[str, Any], source: SourcePosition, now: datetime
    ) -> Outcome:
        """Keep the fields of the person's latest profile; release the events that waited for it."""
        decoded = self._decode(source, "profile")
        if isinstance(decoded, Outcome):
            return decoded
        person, updated = decoded["person_id"], to_ms_any(decoded["updated_time"])
        stored = dict(persons.get(person) or {})
        stored.update(
            person=person, partition=source.partition, profile=from_profile(decoded), profile_time=updated
        )
        metrics.INPUTS.labels("profile").inc()
        released = self._release(
            person,
            ChainMap({person: stored}, persons),
            states,
            now,
            lambda p: p["time"] <= updated,
            "profile",
        )
        released.writes.insert(0, ("persons", person, stored))
        return released

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
        self,
        persons: Mapping[str, Any],
        states: Mapping[str, Any],
        source: SourcePosition,
        now: datetime,
        released: bool = False,
        as_person: str | None = None,
    ) -> Outcome:
        """An enriched event, tag or geofence transition -> the campaigns it starts, converts or times.

        ``as_person``: decide it for this person rather than the envelope's (an event of a person
        merged into ``as_person``, forwarded or folded in; see "merges" below)."""
        env = self._decode(source, "enriched_event")
        if isinstance(env, Outcome):
            return env
        if env["kind"] == "merge" and not as_person:
            return self._request_hand_over(env)
        event = self._person_event(env)
        if isinstance(event, Rejection):
            return self._reject("to_person_event", event, source, env["message_id"])
        metrics.INPUTS.labels("enriched" if event else "enriched_ignored").inc()
        if event is None:
            return Outcome()
        marker = (states.get(env["person_id"]) or {}).get("x")
        if marker and not as_person:  # merged away already: its events are the survivor's
            return self._forward(env["person_id"], marker, source)
        person, ctx = as_person or env["person_id"], self.context()
        if as_person:
            event = replace(event, person_id=as_person)
        stored = persons.get(person)
        if not released and self.profile_wait_ms and _profile_behind(stored, event):
            return self._park(person, states, source, event, now)
        return self._decide(
            person, stored, states, lambda v, s: on_event(event, v, s, now, ctx), source, event.event_id
        )

    # -- events that came before their profile ----------------------------------------------------
    # The enricher writes the profile after each record it applies (updated_time = the latest event
    # time), but on another topic: an event may be read before the profile that includes it, and a
    # new person's first event would find no address. Such an event waits in the person's state
    # until that profile arrives, or at most ``profile_wait_ms`` (then it is decided as it is).
    def _park(
        self,
        person: str,
        states: Mapping[str, Any],
        source: SourcePosition,
        event: PersonEvent,
        now: datetime,
    ) -> Outcome:
        entry = dict(states.get(person) or {})
        parked = list(entry.get("parked") or [])
        if event.event_id in (entry.get("seen") or []) or event.event_id in {p["id"] for p in parked}:
            metrics.DUPLICATES.labels("input").inc()
            return Outcome()
        until = to_ms(now) + self.profile_wait_ms
        parked.append(
            {
                "id": event.event_id,
                "time": to_ms(event.time),
                "until": until,
                "topic": source.topic,
                "partition": source.partition,
                "offset": source.offset,
                "key": _b64(source.key),
                "value": _b64(source.value),
            }
        )
        entry.update(person=person, partition=source.partition, parked=parked[-PARKED_MAX:])
        entry["due"] = _earliest(entry.get("due"), until)
        metrics.PARKED.labels("parked").inc()
        return Outcome(writes=[("states", person, entry)], due={person: entry["due"]})

    def _release(
        self,
        person: str,
        persons: Mapping[str, Any],
        states: Mapping[str, Any],
        now: datetime,
        ready: Callable[[dict[str, Any]], bool],
        why: str,
    ) -> Outcome:
        """Decide the parked events that are ready, in input order, on top of each other's state."""
        entry = states.get(person) or {}
        parked = list(entry.get("parked") or [])
        go = [p for p in parked if ready(p)]
        if not go:
            return Outcome()
        local: dict[str, Any] = {person: {**entry, "parked": [p for p in parked if not ready(p)]}}
        total = Outcome()
        for p in sorted(go, key=lambda p: (p["partition"], p["offset"])):
            src = SourcePosition(
                p["topic"], p["partition"], p["offset"], _unb64(p["key"]), _unb64(p["value"])
            )
            outcome = self.enriched(persons, local, src, now, released=True, as_person=person)
            total.sends.extend(outcome.sends)
            local.update({k: v for table, k, v in outcome.writes if table == "states"})
            metrics.PARKED.labels(why).inc()
        final = local[person]
        final["due"] = _earliest(
            PersonState.from_bytes(final["state"].encode()).next_due_ms() if final.get("state") else None,
            *(p["until"] for p in final.get("parked") or []),
        )
        total.writes.append(("states", person, final))
        total.due[person] = final["due"]
        return total

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

    # -- merges -------------------------------------------------------------------------------
    # Only the survivor S's partition sees the enricher's `merge` envelope (keyed S,
    # details.merged_from A), while A's state lives on A's partition, maybe on another instance.
    # So S's partition asks (request, keyed A), A's partition hands its state over (fold, keyed S)
    # and keeps a marker row ("x": S), S's partition folds it in. Events of A read after the
    # marker are forwarded to S (event, keyed S). All on `trigger.merges`, read by the same agent,
    # so its partition p is co-assigned with the inputs' and the tables' partition p.
    def _request_hand_over(self, env: dict[str, Any]) -> Outcome:
        survivor, merged = env["person_id"], (env.get("details") or {}).get("merged_from")
        metrics.INPUTS.labels("merge").inc()
        if not merged or merged == survivor:
            return Outcome()
        # One login can merge several persons, all with the login's message id.
        request_id = f"{env['message_id']}|merge:{merged}"
        request = {"t": "request", "from": merged, "into": survivor, "id": request_id}
        metrics.HANDOVERS.labels("request").inc()
        # A replayed merge asks again: harmless, the marker row answers it.
        return Outcome(sends=[_handover_send(merged, request)])

    def _forward(self, merged: str, survivor: str, source: SourcePosition) -> Outcome:
        """An enriched record of a person merged away already: the survivor's partition decides it."""
        message = {"t": "event", "from": merged, "into": survivor, "topic": source.topic,
                   "offset": source.offset, "value": _b64(source.value)}  # fmt: skip
        metrics.HANDOVERS.labels("forwarded").inc()
        return Outcome(sends=[_handover_send(survivor, message)])

    def handover(
        self, persons: Mapping[str, Any], states: Mapping[str, Any], source: SourcePosition, now: datetime
    ) -> Outcome:
        """A record of `trigger.merges`, keyed by the person whose partition must act."""
        try:
            message = json.loads(source.value or b"")
            step = message["t"]
            missing = HANDOVER_FIELDS[step] - message.keys()
            if missing:
                raise ValueError(f"{step} without {sorted(missing)}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return self._reject("handover", Rejection("undecodable", f"merge hand-over: {exc}"), source, None)
        if step == "request":
            return self._hand_over(states, source.partition, message)
        survivor = message["into"]
        marker = (states.get(survivor) or {}).get("x")
        if marker:  # the survivor was merged on in turn (a chain): pass it along
            metrics.HANDOVERS.labels("forwarded").inc()
            return Outcome(sends=[_handover_send(marker, {**message, "into": marker})])
        if step == "fold":
            return self._fold(states, source.partition, message)
        original = SourcePosition(
            message["topic"], source.partition, message["offset"], survivor.encode(), _unb64(message["value"])
        )
        return self.enriched(persons, states, original, now, as_person=survivor)

    def _hand_over(self, states: Mapping[str, Any], p: int, message: dict[str, Any]) -> Outcome:
        """A's partition: send A's state to S, leave a marker. Send acknowledged before the marker
        is written: a crash in between sends the same fold again, which S recognises by its id."""
        merged, survivor = message["from"], message["into"]
        entry = states.get(merged) or {}
        if entry.get("x"):
            metrics.HANDOVERS.labels("duplicate").inc()  # a replayed request
            return Outcome()
        if entry and entry.get("partition") != p:
            # the inputs were not partitioned like faust's sends (murmur2 of the person id)
            log.warning("merge request on another partition than the person's", extra={"partition": p})
            metrics.HANDOVERS.labels("dropped").inc()
            return Outcome()
        outcome = Outcome()
        if entry:
            handed = {**message, "t": "fold", "id": f"fold:{message['id']}", "state": entry.get("state"),
                      "seen": entry.get("seen") or [], "parked": entry.get("parked") or []}  # fmt: skip
            outcome.sends.append(_handover_send(survivor, handed))
        # No state: nothing is decided for A any more, its later inputs go to S (S knows A's seen ids).
        marker = {"person": merged, "partition": p, "x": survivor, "due": None}
        outcome.writes.append(("states", merged, marker))
        outcome.due[merged] = None
        metrics.HANDOVERS.labels("handed_over").inc()
        return outcome

    def _fold(self, states: Mapping[str, Any], p: int, message: dict[str, Any]) -> Outcome:
        """S's partition: fold A's state into S's (merge.fold); A's parked events wait here now.

        A fold read again is recognised by its id. It may carry more than the first time: if A's
        instance crashed after sending it and before writing its marker, the replay can apply an
        input of A before the request (the topics' order differs between runs) and send the same
        fold with that input's pending send added. Only what the first fold did not bring is folded
        in then (pending sends by key; timers, entries and conversions are latest-wins, so applying
        them again changes nothing; the send log is not counted twice)."""
        survivor = message["into"]
        entry = states.get(survivor) or {}
        seen = list(entry.get("seen") or [])
        seen_before = set(seen)
        folds: dict[str, list[str]] = dict(entry.get("folds") or {})
        theirs = PersonState.from_bytes(message["state"].encode() if message.get("state") else None)
        if message["id"] in seen:
            known = set(folds.get(message["id"], []))
            extra = {key: send for key, send in theirs.pending.items() if key not in known}
            if not extra:
                metrics.HANDOVERS.labels("duplicate").inc()  # folded before a crash
                return Outcome()
            theirs = PersonState(
                pending=extra, timers=theirs.timers, entries=theirs.entries, conversions=theirs.conversions
            )
        own = PersonState.from_bytes(entry["state"].encode() if entry.get("state") else None)
        state = fold(own, theirs)
        parked = list(entry.get("parked") or [])
        ids = {x["id"] for x in parked}
        # Their source partition is now S's (it names the state row's partition when released).
        parked += [{**x, "partition": p} for x in message.get("parked") or [] if x["id"] not in ids]
        parked = parked[-PARKED_MAX:]
        # A's applied input ids too: the enricher may re-send one of A's events under S.
        new_ids = [x for x in message.get("seen") or [] if x not in seen_before]
        this_fold = [] if message["id"] in seen_before else [message["id"]]
        seen = [*new_ids, *seen, *this_fold][-SEEN_IDS:]
        brought = sorted({*folds.pop(message["id"], []), *theirs.pending})
        folds[message["id"]] = brought  # last: the oldest folds are forgotten first
        folds = dict(list(folds.items())[-FOLDS_KEPT:])
        due = _earliest(state.next_due_ms(), *(x["until"] for x in parked))
        row = {
            "person": survivor,
            "partition": p,
            "state": state.to_bytes().decode(),
            "due": due,
            "seen": seen,
            "emitted": list(entry.get("emitted") or []),  # A's ids name A: S never produces them
            "parked": parked,
            "folds": folds,
        }
        metrics.HANDOVERS.labels("refolded" if message["id"] in seen_before else "folded").inc()
        return Outcome(writes=[("states", survivor, row)], due={survivor: due})

    # -- time ---------------------------------------------------------------------------------
    def tick_person(
        self,
        person: str,
        persons: Mapping[str, Any],
        states: Mapping[str, Any],
        source: SourcePosition,
        now: datetime,
    ) -> Outcome:
        """A due person: events that waited long enough for a profile, then expired timers and
        delayed or held sends that may go now."""
        now_ms, ctx = to_ms(now), self.context()
        released = self._release(person, persons, states, now, lambda p: p["until"] <= now_ms, "timeout")
        local = ChainMap({k: v for table, k, v in released.writes if table == "states"}, states)
        decided = self._decide(
            person, persons.get(person), local, lambda v, s: on_tick(v, s, now, ctx), source
        )
        decided.sends[:0] = released.sends
        if not any(table == "states" for table, _, _ in decided.writes):  # decided nothing to write
            decided.writes[:0] = released.writes
            decided.due = {**released.due, **decided.due}
        return decided

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
        if entry.get("x"):  # merged into another person: nothing is decided or sent for it any more
            return Outcome()
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
                sends = self._emit(action)
                emitted.append(msg_id)
                if msg_id in self.recently_produced.get(source.partition, ()):
                    # Produced by the previous owner, whose state write was lost: not again. The
                    # receipt goes again (it may be the half that was lost; ingest deduplicates it).
                    metrics.DUPLICATES.labels("replayed_message").inc()
                    outcome.sends.extend(sends[1:])
                    continue
                outcome.sends.extend(sends)
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
        parked = list(entry.get("parked") or [])
        due = _earliest(decision.state.next_due_ms(), *(p["until"] for p in parked))
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
                    "parked": parked,
                    "folds": entry.get("folds") or {},
                },
            )
        )
        outcome.due[person] = due
        metrics.DECISION_SECONDS.observe(time.perf_counter() - started)
        return outcome

    def _emit(self, action: Emit) -> list[Send]:
        name = action.topic.name
        value = self.serde.encode("outbound_message", action.message, topic=self.topics[name], check=False)
        sends = [Send(name, action.key.encode(), value, action.message["message_id"])]
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


def _profile_behind(stored: dict[str, Any] | None, event: PersonEvent) -> bool:
    """No profile yet, or the kept one predates the event (its profile is still on the way)."""
    profile_time = (stored or {}).get("profile_time")
    return profile_time is None or to_ms(event.time) > profile_time


def _earliest(*times: int | None) -> int | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _handover_send(key: str, message: dict[str, Any]) -> Send:
    return Send("trigger.merges", key.encode(), json.dumps(message, sort_keys=True).encode())


def tick_value(kind: str, now_ms: int) -> bytes:
    """A tick's bytes: ``rebuild`` (index this partition from the table) or ``due``."""
    return json.dumps({"kind": kind, "sent_ms": now_ms}).encode()


def tick_kind(value: bytes | None) -> str:
    try:
        return str(json.loads(value or b"{}").get("kind", "due"))
    except ValueError:
        return "due"
