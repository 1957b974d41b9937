"""The streaming core without Kafka: states, memberships and a timer heap, driven by facts and time.

A Kafka/faust adapter will keep ``states`` and ``members`` in changelog-backed tables (states as
``PersonState.to_bytes()``), call ``on_fact`` per decoded record and ``advance`` from a periodic
timer, and produce each returned :class:`Change` to ``segment-membership``. The timer heap is
derived data: after a restart it is rebuilt by evaluating ``next_change_ms`` for the time-dependent
segments of each restored person.

Order per fact: fire timers due up to ``now`` first (so state is never pruned past a pending timer),
then apply the fact, then evaluate the segments the fact touches (plus, for a person seen for the
first time, the segments true on an empty state), then schedule their next possible change.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.segmenter.conditions import AttributeCondition, InsideCondition, NearCondition, leaves
from services.segmenter.definitions import Segment, SegmentDiff, diff
from services.segmenter.evaluate import apply, evaluate, next_change_ms, transitions
from services.segmenter.facts import Fact, PersonState
from services.segmenter.index import Index
from services.segmenter.selectors import spec_for


@dataclass(frozen=True)
class Change:
    person_id: str
    segment_id: str
    change: str  # entered | exited
    time_ms: int
    reason: str


@dataclass(frozen=True)
class Reload:
    diff: SegmentDiff
    changes: list[Change]
    needs_history: frozenset[str]


def _tracked(segment: Segment, old: Index) -> bool:
    """Whether the old index already kept everything this segment reads, far enough back."""
    for leaf in leaves(segment.condition):
        if isinstance(leaf, AttributeCondition):
            ok = leaf.attribute in old.attributes
        elif isinstance(leaf, InsideCondition):
            ok = leaf.inside in old.presence
        elif isinstance(leaf, NearCondition):
            ok = old.position
        else:
            key = spec_for(leaf).key
            ok = key in old.retention and old.retention[key] >= (leaf.within or 0)
        if not ok:
            return False
    return True


@dataclass
class Engine:
    index: Index
    states: dict[str, PersonState] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)  # person → segment ids
    evaluations: int = 0  # how many (person, segment) evaluations ran: the cost the index bounds
    pending: set[str] = field(default_factory=set)  # segments waiting for history (see reload)
    clock_ms: int = 0  # the latest processing time seen
    _heap: list[tuple[int, str, str]] = field(default_factory=list)
    _due: dict[tuple[str, str], int] = field(default_factory=dict)

    def on_fact(self, fact: Fact, now_ms: int) -> list[Change]:
        now_ms = max(now_ms, self.clock_ms)  # pruning assumes the processing clock never goes back
        changes = self.advance(now_ms)
        person = fact.person_id
        first_seen = person not in self.states
        state = apply(fact, self.states.get(person, PersonState()), self.index, now_ms)
        self.states[person] = state
        touched = self.index.segments_for(fact)
        if first_seen:
            touched |= self.index.vacuous
        reason = f"{fact.kind}:{fact.name}"
        changes += self._evaluate(person, touched, now_ms, reason)
        return changes

    def absorb(self, person: str, other: PersonState, now_ms: int, reason: str = "merge") -> list[Change]:
        """Fold a merged-away person's state into ``person`` and re-evaluate every segment for it
        (merges are rare; the folded state can touch anything). The folded series are pruned to
        their retention as ``apply`` would, so the state stays bounded."""
        now_ms = max(now_ms, self.clock_ms)
        changes = self.advance(now_ms)
        state = self.states.get(person, PersonState()).merged(other)
        for key in other.series:  # new objects (``merged``); this person's own are pruned already
            if key in self.index.retention:
                state.series[key].prune(now_ms - self.index.retention[key])
        self.states[person] = state
        changes += self._evaluate(person, set(self.index.segments), now_ms, reason)
        return changes

    def remove(
        self, person: str, now_ms: int, reason: str = "merge"
    ) -> tuple[list[Change], PersonState | None]:
        """Forget a person merged into another: timers due up to ``now_ms`` fire first (an exit
        keeps its window's time), then every remaining membership exits at ``now_ms``. Returns
        the changes and the person's state (None if never seen), to hand over to the survivor."""
        now_ms = max(now_ms, self.clock_ms)
        changes = self.advance(now_ms)
        state = self.states.pop(person, None)
        left = self.members.pop(person, set())
        for key in [key for key in self._due if key[0] == person]:
            del self._due[key]  # its heap entries are skipped when they surface
        changes += [Change(person, s, "exited", now_ms, reason) for s in sorted(left)]
        return changes, state

    def advance(self, now_ms: int) -> list[Change]:
        """Fire every timer due at or before ``now_ms``, each evaluated at its own due time."""
        self.clock_ms = max(self.clock_ms, now_ms)
        changes: list[Change] = []
        while self._heap and self._heap[0][0] <= now_ms:
            due, person, segment_id = heapq.heappop(self._heap)
            if self._due.get((person, segment_id)) != due:
                continue  # superseded by a later schedule
            del self._due[(person, segment_id)]
            changes += self._evaluate(person, {segment_id}, due, "timer")
        return changes

    def _evaluate(self, person: str, segment_ids: set[str], now_ms: int, reason: str) -> list[Change]:
        state = self.states[person]
        results = {}
        for segment_id in segment_ids - self.pending:
            segment = self.index.segments[segment_id]
            results[segment_id] = evaluate(segment, state, now_ms)
            self.evaluations += 1
            if segment_id in self.index.time_dependent:
                self._schedule(person, segment_id, next_change_ms(segment, state, now_ms))
        current = self.members.setdefault(person, set())
        found = transitions(current, results, reason)
        for t in found:
            (current.add if t.change == "entered" else current.discard)(t.segment_id)
        return [Change(person, t.segment_id, t.change, now_ms, t.reason) for t in found]

    def _schedule(self, person: str, segment_id: str, due: int | None) -> None:
        key = (person, segment_id)
        current = self._due.get(key)
        if due is None:
            self._due.pop(key, None)
        elif current is None or due < current:
            self._due[key] = due
            heapq.heappush(self._heap, (due, person, segment_id))
        # A later due than the pending one keeps the pending timer: firing early only re-evaluates and
        # reschedules, and the heap holds about one entry per (person, segment) instead of one per fact.

    def restore(
        self, states: Mapping[str, PersonState], members: Mapping[str, set[str]], now_ms: int
    ) -> list[Change]:
        """Start from persisted tables (after a restart or a rebalance). The timer heap is derived data:
        it is rebuilt by evaluating, per person, the time-dependent segments that read a series the
        person has; any change returned means the tables were behind (e.g. a crash between writes)."""
        self.states.update(states)
        for person, segment_ids in members.items():
            self.members[person] = set(segment_ids)
        self.clock_ms = max(self.clock_ms, now_ms)
        series_segments = {spec.key: self.index.by_touch.get(touch, set())
                           for entries in self.index.series_by_touch.values() for spec, _ in entries
                           for touch in spec.touches}  # fmt: skip
        changes: list[Change] = []
        for person, state in states.items():
            timed = {sid for key in state.series for sid in series_segments.get(key, ())}
            changes += self._evaluate(person, timed & self.index.time_dependent, now_ms, "restore")
        return changes

    def reload(self, segments: Mapping[str, Segment], now_ms: int) -> Reload:
        """Switch to new definitions keeping every person's state and the unchanged memberships.

        Removed segments exit their members. Added or changed segments that read only what the state
        already tracks (same attributes, regions, position, and series kept at least as far back as
        their windows) are evaluated for every known person now. The others are returned in
        ``needs_history``: their membership must come from ClickHouse (``sql.compile_segment``) and
        their new series from history before they stream (docs/segments.md, "New and changed
        segments"); until ``seed`` is called they are not evaluated (a changed one keeps its old members).
        """
        changes = diff(self.index.segments, segments)
        old = self.index
        self.index = Index.build(segments)
        out: list[Change] = []
        removed = set(changes.removed)
        for segment_id in changes.removed:
            for person in sorted(self.member_ids(segment_id)):
                self.members[person].discard(segment_id)
                out.append(Change(person, segment_id, "exited", now_ms, "definition"))
        for key in [key for key in self._due if key[1] in removed]:
            del self._due[key]  # its heap entries are skipped when they surface
        pending = {s for s in (*changes.added, *changes.changed) if not _tracked(segments[s], old)}
        self.pending |= pending
        self.pending -= removed
        for segment_id in (*changes.added, *changes.changed):
            if segment_id not in pending:
                for person in list(self.states):
                    out += self._evaluate(person, {segment_id}, now_ms, "definition")
        return Reload(changes, out, frozenset(pending))

    def seed(
        self, segment_id: str, members: set[str], states: Mapping[str, PersonState], now_ms: int
    ) -> list[Change]:
        """Start streaming a pending segment from history: its members (the SQL oracle's answer) and
        the persons' states with the new series filled in from the same history."""
        self.states.update(states)
        self.pending.discard(segment_id)
        out = []
        for person in members | {p for p, segs in self.members.items() if segment_id in segs}:
            current = self.members.setdefault(person, set())
            found = transitions(current, {segment_id: person in members}, "definition")
            for t in found:
                (current.add if t.change == "entered" else current.discard)(t.segment_id)
            out += [Change(person, t.segment_id, t.change, now_ms, t.reason) for t in found]
        for person in self.states:
            self._schedule(
                person,
                segment_id,
                next_change_ms(self.index.segments[segment_id], self.states[person], now_ms),
            )
        return out

    def member_ids(self, segment_id: str) -> set[str]:
        return {person for person, segments in self.members.items() if segment_id in segments}
