"""The segmenter's record path with its edges, one :class:`Engine` per input partition. No faust here.

    enriched record → decode → skip if already applied (offset) → facts (enriched.py)
        → Engine.on_fact → encode changes → Outcome(sends, table writes)
    tick (one per owned partition, from the faust timer) → Engine.advance → Outcome
    merge envelope → request ⇢ segmenter.merges ⇢ the merged-away person's partition: exits,
        fold ⇢ segmenter.merges ⇢ the survivor's partition: Engine.absorb (see "merges" below)

An engine holds the persons of one partition of ``enriched`` (it is keyed by person id), so its
timer heap, its table writes (changelog partition = the input partition) and a rebalance all
follow partitions. Engines are built lazily, on the first record or tick of a partition after an
assignment, from the table rows of that partition: ``Engine.restore`` rebuilds the timer heap, and
any change it finds (a window that ended while the service was down) is emitted with reason
``restore``.

Table rows (one table, so a person's state and membership are written together, in one changelog
record): ``person id → {"p": partition, "o": last applied offset, "s": PersonState JSON,
"m": [segment ids], "r": [message_id|kind of the last RECENT_KEYS records applied]}`` — "r" skips
the copies the enricher re-sends after a crash (same record, new offset; docs/design.md), and
folds already applied; a person merged into another keeps a marker ``{"p", "o", "r", "m": [],
"x": survivor}``;
``~definitions:<p> → {"p": p, "segments": [...]}`` are the definitions the
partition's state was built for, so a restart under changed definitions goes through
``Engine.reload`` like a live reload. The faust agent performs an Outcome in order: sends, then
writes (a crash between them replays the record; the stored offset then skips what was applied).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from services.common.logs import get_logger
from services.common.serde import Serde, SerdeError
from services.common.steps import Rejection, SourcePosition, dead_letter
from services.segmenter import metrics
from services.segmenter.definitions import Segment, diff, parse
from services.segmenter.engine import Change, Engine
from services.segmenter.enriched import facts_for
from services.segmenter.evaluate import apply
from services.segmenter.facts import PersonState
from services.segmenter.index import Index

log = get_logger("segmenter")
DEFINITIONS_KEY = "~definitions:"  # not a person id: ids of the enricher never start with "~"
RECENT_KEYS = 64  # per person: enricher copies follow their original within one commit interval
Seeder = Callable[[Engine, frozenset[str], int], list[Change]]
Table = MutableMapping[str, Any]


@dataclass(frozen=True)
class Send:
    output: str  # segment-membership | dead-letters | segmenter.merges
    key: bytes | None
    value: bytes


@dataclass
class Outcome:
    sends: list[Send] = field(default_factory=list)
    writes: dict[str, Any] = field(default_factory=dict)


def change_id(c: Change) -> str:
    """Deterministic, so a consumer can drop a change it has already seen (replays, restores)."""
    text = "\x1f".join((c.person_id, c.segment_id, c.change, str(c.time_ms)))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def now_ms() -> int:
    return int(time.time() * 1000)


def dump(segments: Mapping[str, Segment]) -> list[dict[str, Any]]:
    return [s.model_dump(mode="json", by_alias=True, exclude_none=True) for s in segments.values()]


class Segmenter:
    def __init__(
        self,
        serde: Serde,
        topics: Mapping[str, str],
        segments: dict[str, Segment],
        seeder: Seeder,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.serde, self.topics, self.seeder, self.clock = serde, topics, seeder, clock
        self.segments = segments
        self.engines: dict[int, Engine] = {}
        self.active: dict[int, dict[str, Segment]] = {}  # the definitions each engine runs with
        self.counts: Counter[str] = Counter()  # members per segment over this instance's engines

    # -- lifecycle --------------------------------------------------------------------------
    def set_definitions(self, segments: dict[str, Segment]) -> None:
        """New definitions; each partition switches on its next record or tick (in its own context)."""
        self.segments = segments

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked: drop their engines (rebuilt from the table if they come back)."""
        for p in partitions:
            engine = self.engines.pop(p, None)
            self.active.pop(p, None)
            if engine is not None:
                self._count(engine.members.values(), -1)

    # -- the two inputs ---------------------------------------------------------------------
    def record(self, table: Table, source: SourcePosition) -> Outcome:
        started = time.perf_counter()
        now = self.clock()
        out = Outcome()
        engine = self._engine(table, source.partition, now, out)
        try:
            record_type, env = self.serde.decode(source.value)
            if record_type != "enriched_event":
                return self._reject(out, Rejection("wrong_record_type", f"{record_type} on enriched"), source)
            record = self.serde.decode(env["original"])[1] if env["original"] else None
        except SerdeError as exc:
            return self._reject(out, Rejection("undecodable", str(exc)), source)
        person = env["person_id"]
        row = out.writes.get(person) or table.get(person)
        seen_key = f"{env['message_id']}|{env['kind']}"
        if env["kind"] == "merge":  # one input record can merge several persons into one
            seen_key += f":{(env.get('details') or {}).get('merged_from', '')}"
        if row is not None and row.get("o", -1) >= source.offset:
            metrics.RECORDS.labels("duplicate").inc()  # applied before a crash, offset not committed
            return out
        if row is not None and seen_key in row.get("r", ()):
            # the same enriched record at a new offset: the enricher re-sent it after its crash
            metrics.RECORDS.labels("duplicate").inc()
            return out
        if env["kind"] == "merge":
            return self._request_hand_over(out, source, env, row, seen_key)
        facts = facts_for(env, record)
        if isinstance(facts, Rejection):
            return self._reject(out, facts, source, env["message_id"])
        if row is not None and row.get("x"):
            return self._forward(out, engine, source, env, row, facts, seen_key, now)
        before = engine.evaluations
        changes: list[Change] = []
        try:
            for fact in facts:
                changes += engine.on_fact(fact, now)
                metrics.FACTS.labels(fact.kind).inc()
        except Exception as exc:  # a bug must not stop the partition: park the record, say why
            log.exception("segment evaluation failed", extra={"offset": source.offset})
            return self._reject(
                out, Rejection("internal_error", type(exc).__name__), source, env["message_id"]
            )
        metrics.EVALUATIONS.inc(engine.evaluations - before)
        metrics.RECORDS.labels("applied" if facts else "no_facts").inc()
        self._emit(out, changes, env["message_id"])
        if facts:  # a record with no fact (session_end, merge) leaves the person unknown/unchanged
            self._write(out, table, source.partition, {person}, (person, source.offset, seen_key))
        self._write(out, table, source.partition, {c.person_id for c in changes} - {person})
        metrics.LATENCY.observe(time.perf_counter() - started)
        return out

    def handover(self, table: Table, source: SourcePosition) -> Outcome:
        """A record of ``segmenter.merges`` (keyed by the person whose partition must act):
        ``request`` (hand this merged-away person over) or ``fold`` (fold this state into the
        survivor). See docs/segments.md, "Merges"."""
        now = self.clock()
        out = Outcome()
        engine = self._engine(table, source.partition, now, out)
        if not source.value:  # the timer's empty record (app.py): keeps the partition committed
            return out
        try:
            message = json.loads(source.value)
            step = message["t"]
            if step not in ("request", "fold"):
                raise ValueError(step)
        except (ValueError, KeyError, TypeError) as exc:
            return self._reject(out, Rejection("undecodable", f"merge hand-over: {exc}"), source)
        try:
            if step == "request":
                self._hand_over(out, table, engine, source.partition, message, now)
            else:
                self._fold(out, table, engine, source.partition, message, now)
        except Exception as exc:  # as for records: a bug must not stop the partition
            log.exception("merge hand-over failed", extra={"offset": source.offset})
            return self._reject(out, Rejection("internal_error", type(exc).__name__), source)
        return out

    def tick(self, table: Table, partition: int) -> Outcome:
        now = self.clock()
        out = Outcome()
        engine = self._engine(table, partition, now, out)
        before = engine.evaluations
        changes = engine.advance(now)
        metrics.TIMERS.inc(engine.evaluations - before)
        metrics.EVALUATIONS.inc(engine.evaluations - before)
        self._emit(out, changes, None)
        self._write(out, table, partition, {c.person_id for c in changes})
        return out

    # -- merges -----------------------------------------------------------------------------
    # Only the survivor's partition sees the enricher's `merge` envelope, while the merged-away
    # person's state lives on its own partition (maybe another instance). So: the survivor's
    # partition asks (request, keyed by the merged-away person), that partition ends the
    # memberships and sends the state (fold, keyed by the survivor), the survivor's partition
    # folds it in and re-evaluates. The merged-away person's row stays as a marker ("x": the
    # survivor) so that its facts read later (its partition lagging) follow, and replays stop.
    def _request_hand_over(
        self, out: Outcome, source: SourcePosition, env: dict[str, Any], row: Any, seen_key: str
    ) -> Outcome:
        survivor, merged = env["person_id"], (env.get("details") or {}).get("merged_from")
        metrics.RECORDS.labels("merge").inc()
        if not merged or merged == survivor:
            return out
        request = {"t": "request", "from": merged, "into": survivor, "id": seen_key, "mid": env["message_id"]}
        out.sends.append(Send("segmenter.merges", merged.encode(), json.dumps(request).encode()))
        metrics.HANDOVERS.labels("request").inc()
        # The survivor's row is not marked with this record: its changelog record can be
        # acknowledged while the request, sent to another partition, is still in the producer
        # when a SIGKILL hits (docs/segments.md "Recovery"); a replay then asks again, and a
        # repeated request only re-sends what the first one sent.
        return out

    def _hand_over(
        self, out: Outcome, table: Table, engine: Engine, p: int, message: dict[str, Any], now: int
    ) -> None:
        merged, survivor = message["from"], message["into"]
        row = out.writes.get(merged) or table.get(merged)
        if row is not None and row.get("x"):
            # Handed over already: a replayed request. Its outputs may have been lost with the
            # producer's buffer while the marker's changelog record was not, so send them again
            # (the fold keeps its id, the survivor drops a copy; exits are idempotent).
            sent = row.get("h") or {}
            gone = [Change(merged, s, "exited", now, "merge") for s in sent.get("m", [])]
            self._emit(out, gone, message["mid"], count=False)
            if sent.get("f"):
                out.sends.append(Send("segmenter.merges", row["x"].encode(), sent["f"].encode()))
            metrics.HANDOVERS.labels("resent").inc()
            return
        if row is not None and row.get("p") != p:
            # `enriched` was not partitioned like faust's sends (murmur2 of the person id)
            log.warning("merge request on another partition than the person's", extra={"partition": p})
            return
        changes, state = engine.remove(merged, now)
        self._emit(out, changes, message["mid"])
        fold = None
        if state is not None:
            fold = json.dumps(
                {**message, "t": "fold", "id": f"fold:{message['id']}", "s": state.to_bytes().decode()}
            )
            out.sends.append(Send("segmenter.merges", survivor.encode(), fold.encode()))
        previous = row or {}
        exited = sorted(c.segment_id for c in changes if c.person_id == merged and c.change == "exited")
        # the marker keeps what was sent ("h"), to send it again on a replayed request
        out.writes[merged] = {"p": p, "o": previous.get("o", -1), "r": previous.get("r", []), "m": [],
                              "x": survivor, "h": {"m": exited, "f": fold}}  # fmt: skip
        self._write(out, table, p, {c.person_id for c in changes} - {merged})
        metrics.HANDOVERS.labels("handed_over").inc()

    def _fold(
        self, out: Outcome, table: Table, engine: Engine, p: int, message: dict[str, Any], now: int
    ) -> None:
        survivor = message["into"]
        row = out.writes.get(survivor) or table.get(survivor)
        if row is not None and row.get("x"):  # the survivor was merged on in turn: pass it along
            forward = {**message, "into": row["x"]}
            out.sends.append(Send("segmenter.merges", row["x"].encode(), json.dumps(forward).encode()))
            metrics.HANDOVERS.labels("forwarded").inc()
            return
        if row is not None and message["id"] in row.get("r", ()):
            metrics.HANDOVERS.labels("duplicate").inc()  # folded before a crash
            return
        before = engine.evaluations
        changes = engine.absorb(survivor, PersonState.from_bytes(message["s"].encode()), now)
        metrics.EVALUATIONS.inc(engine.evaluations - before)
        self._emit(out, changes, message["mid"])
        self._write(out, table, p, {survivor}, (survivor, None, message["id"]))
        self._write(out, table, p, {c.person_id for c in changes} - {survivor})
        metrics.HANDOVERS.labels("folded").inc()

    def _forward(
        self,
        out: Outcome,
        engine: Engine,
        source: SourcePosition,
        env: dict[str, Any],
        row: dict[str, Any],
        facts: list[Any],
        seen_key: str,
        now: int,
    ) -> Outcome:
        """Facts of a person merged away already (read after the hand-over): fold them into the
        survivor as a state of their own."""
        if facts:
            state = PersonState()
            for fact in facts:
                state = apply(fact, state, engine.index, now)
            merged = env["person_id"]
            fold = {"t": "fold", "from": merged, "into": row["x"], "id": f"fold:{seen_key}@{merged}",
                    "mid": env["message_id"], "s": state.to_bytes().decode()}  # fmt: skip
            out.sends.append(Send("segmenter.merges", row["x"].encode(), json.dumps(fold).encode()))
            metrics.HANDOVERS.labels("forwarded").inc()
        metrics.RECORDS.labels("forwarded").inc()
        out.writes[env["person_id"]] = _applied(row, source.offset, seen_key)
        return out

    # -- engines ----------------------------------------------------------------------------
    def _engine(self, table: Table, p: int, now: int, out: Outcome) -> Engine:
        engine = self.engines.get(p)
        if engine is None:
            engine = self._restore(table, p, now, out)
        if self.active[p] is not self.segments:
            self._reload(table, engine, p, now, out)
        return engine

    def _restore(self, table: Table, p: int, now: int, out: Outcome) -> Engine:
        states: dict[str, PersonState] = {}
        members: dict[str, set[str]] = {}
        saved = None
        for key, row in table.items():
            if not isinstance(row, dict) or row.get("p") != p:
                continue
            if key.startswith(DEFINITIONS_KEY):
                saved = {s.id: s for s in parse({"segments": row["segments"]}, key)}
            elif not row.get("x"):  # a merged-away person's marker has no state
                states[key] = PersonState.from_bytes(row["s"].encode())
                members[key] = set(row["m"])
        # Equal saved definitions count as the current ones (no reload to log).
        active = saved if saved is not None and not diff(saved, self.segments).empty else self.segments
        engine = Engine(Index.build(active))
        self._count(members.values(), +1)
        changes = engine.restore(states, members, now)
        self.engines[p], self.active[p] = engine, active
        self._emit(out, changes, None)
        self._write(out, table, p, {c.person_id for c in changes})
        if saved is None:
            out.writes[f"{DEFINITIONS_KEY}{p}"] = {"p": p, "segments": dump(active)}
        log.info(
            "partition restored", extra={"partition": p, "persons": len(states), "changes": len(changes)}
        )
        return engine

    def _reload(self, table: Table, engine: Engine, p: int, now: int, out: Outcome) -> None:
        new = self.segments
        reload = engine.reload(new, now)
        changes = list(reload.changes)
        if reload.needs_history:
            changes += self.seeder(engine, reload.needs_history, now)
        self.active[p] = new
        self._emit(out, changes, None)
        touched = set(engine.states) if reload.needs_history else {c.person_id for c in changes}
        self._write(out, table, p, touched)
        out.writes[f"{DEFINITIONS_KEY}{p}"] = {"p": p, "segments": dump(new)}
        d = reload.diff
        log.info(
            "definitions applied",
            extra={"partition": p, "added": list(d.added), "changed": list(d.changed),
                   "removed": list(d.removed), "from_history": sorted(reload.needs_history)},
        )  # fmt: skip

    # -- edges ------------------------------------------------------------------------------
    def _write(
        self,
        out: Outcome,
        table: Table,
        p: int,
        persons: Iterable[str],
        applied: tuple[str, int | None, str] | None = None,
    ) -> None:
        """Rows of ``persons``; ``applied`` = (person, offset, record key) of the record just applied
        (offset None: not an `enriched` record, a merge's fold)."""
        engine = self.engines[p]
        for person in persons:
            state = engine.states.get(person)
            if state is None:
                continue
            previous = out.writes.get(person) or table.get(person) or {}
            o, recent = previous.get("o", -1), previous.get("r", [])
            if applied and applied[0] == person:
                o, recent = o if applied[1] is None else applied[1], [*recent, applied[2]][-RECENT_KEYS:]
            members = sorted(engine.members.get(person, ()))
            out.writes[person] = {"p": p, "o": o, "s": state.to_bytes().decode(), "m": members, "r": recent}

    def _emit(self, out: Outcome, changes: list[Change], message_id: str | None, count: bool = True) -> None:
        for c in changes:
            record = {
                "change_id": change_id(c),
                "person_id": c.person_id,
                "segment_id": c.segment_id,
                "change": c.change,
                "change_time": c.time_ms,
                "reason": c.reason,
                "source_message_id": message_id
                if c.reason not in ("timer", "restore", "definition")
                else None,
            }
            topic = self.topics["segment-membership"]
            value = self.serde.encode("segment_membership", record, topic=topic, check=False)
            out.sends.append(Send("segment-membership", c.person_id.encode(), value))
            metrics.CHANGES.labels(c.change).inc()
            if count:  # False for a change sent again (the gauge counted it the first time)
                self.counts[c.segment_id] += 1 if c.change == "entered" else -1
                metrics.MEMBERS.labels(c.segment_id).set(self.counts[c.segment_id])

    def _count(self, memberships: Iterable[set[str]], sign: int) -> None:
        touched: set[str] = set()
        for segment_ids in memberships:
            for s in segment_ids:
                self.counts[s] += sign
                touched.add(s)
        for s in touched:
            metrics.MEMBERS.labels(s).set(self.counts[s])

    def _reject(
        self, out: Outcome, rejection: Rejection, source: SourcePosition, message_id: str | None = None
    ) -> Outcome:
        letter = dead_letter("segmenter", rejection.step or "map", rejection, source, message_id)
        value = self.serde.encode("dead_letter", letter, topic=self.topics["dead-letters"])
        out.sends.append(Send("dead-letters", source.key, value))
        metrics.DEAD_LETTERS.labels(rejection.reason).inc()
        metrics.RECORDS.labels("dead_letter").inc()
        log.info("dead letter", extra={"reason": rejection.reason, "offset": source.offset})
        return out


def _applied(row: dict[str, Any], offset: int, key: str) -> dict[str, Any]:
    """``row`` with this record marked as applied (its offset and key), nothing else changed."""
    return {**row, "o": offset, "r": [*row.get("r", []), key][-RECENT_KEYS:]}
