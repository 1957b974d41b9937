"""The segmenter's record path with its edges, one :class:`Engine` per input partition. No faust here.

    enriched record → decode → skip if already applied (offset) → facts (enriched.py)
        → Engine.on_fact → encode changes → Outcome(sends, table writes)
    tick (one per owned partition, from the faust timer) → Engine.advance → Outcome

An engine holds the persons of one partition of ``enriched`` (it is keyed by person id), so its
timer heap, its table writes (changelog partition = the input partition) and a rebalance all
follow partitions. Engines are built lazily, on the first record or tick of a partition after an
assignment, from the table rows of that partition: ``Engine.restore`` rebuilds the timer heap, and
any change it finds (a window that ended while the service was down) is emitted with reason
``restore``.

Table rows (one table, so a person's state and membership are written together, in one changelog
record): ``person id → {"p": partition, "o": last applied offset, "s": PersonState JSON,
"m": [segment ids], "r": [message_id|kind of the last RECENT_KEYS records applied]}`` — "r" skips
the copies the enricher re-sends after a crash (same record, new offset; docs/design.md);
``~definitions:<p> → {"p": p, "segments": [...]}`` are the definitions the
partition's state was built for, so a restart under changed definitions goes through
``Engine.reload`` like a live reload. The faust agent performs an Outcome in order: sends, then
writes (a crash between them replays the record; the stored offset then skips what was applied).
"""

from __future__ import annotations

import hashlib
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
from services.segmenter.facts import PersonState
from services.segmenter.index import Index

log = get_logger("segmenter")
DEFINITIONS_KEY = "~definitions:"  # not a person id: ids of the enricher never start with "~"
RECENT_KEYS = 64  # per person: enricher copies follow their original within one commit interval
Seeder = Callable[[Engine, frozenset[str], int], list[Change]]
Table = MutableMapping[str, Any]


@dataclass(frozen=True)
class Send:
    output: str  # segment-membership | dead-letters
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
        if row is not None and row.get("o", -1) >= source.offset:
            metrics.RECORDS.labels("duplicate").inc()  # applied before a crash, offset not committed
            return out
        if row is not None and seen_key in row.get("r", ()):
            # the same enriched record at a new offset: the enricher re-sent it after its crash
            metrics.RECORDS.labels("duplicate").inc()
            return out
        facts = facts_for(env, record)
        if isinstance(facts, Rejection):
            return self._reject(out, facts, source, env["message_id"])
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
            else:
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
        applied: tuple[str, int, str] | None = None,
    ) -> None:
        """Rows of ``persons``; ``applied`` = (person, offset, record key) of the record just applied."""
        engine = self.engines[p]
        for person in persons:
            state = engine.states.get(person)
            if state is None:
                continue
            previous = out.writes.get(person) or table.get(person) or {}
            o, recent = previous.get("o", -1), previous.get("r", [])
            if applied and applied[0] == person:
                o, recent = applied[1], [*recent, applied[2]][-RECENT_KEYS:]
            members = sorted(engine.members.get(person, ()))
            out.writes[person] = {"p": p, "o": o, "s": state.to_bytes().decode(), "m": members, "r": recent}

    def _emit(self, out: Outcome, changes: list[Change], message_id: str | None) -> None:
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
