"""Pure evaluation: fold a fact into a person's state, decide membership, and say when it could flip.

- ``apply(fact, state, index, now_ms)`` returns a new state (the old one is untouched); ``index``
  says which attributes, regions and series the defined segments read, so nothing else is stored.
- ``evaluate(segment, state, now_ms)`` is membership at ``now_ms``. Windows are closed:
  ``within: D`` counts facts with ``now - D <= time <= now``; facts stamped after ``now`` count
  once ``now`` reaches them. ``before: B`` means ``time < B`` and ``after: B`` means ``time >= B``.
- ``next_change_ms`` is the earliest time after ``now_ms`` at which membership *could* change with
  no new fact (an entry leaving or entering a window, a relative bound passing), or None. It may
  be early (re-evaluating then is harmless) but never late, so a timer wheel stays exact.
``now_ms`` must not go backwards for one person: pruning folds entries older than the longest
window at the time of the latest ``apply`` into all-time aggregates.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from services.segmenter.conditions import (
    AllOf,
    AnyOf,
    AttributeCondition,
    EventCondition,
    InsideCondition,
    NearCondition,
    Not,
    Occurrence,
    leaves,
)
from services.segmenter.definitions import Segment
from services.segmenter.facts import Fact, PersonState, Series, latest
from services.segmenter.predicates import compare_total, haversine_km, test
from services.segmenter.selectors import spec_for

if TYPE_CHECKING:
    from services.segmenter.index import Index

_EMPTY = Series()
INSIDE_KINDS = ("enter", "dwell")


def apply(fact: Fact, state: PersonState, index: Index, now_ms: int) -> PersonState:
    new = state.copy()
    t = fact.time_ms
    if (
        fact.kind == "attribute"
        and fact.name in index.attributes
        and latest(new.attributes.get(fact.name), t)
    ):
        new.attributes[fact.name] = (t, fact.value)
    if fact.kind == "location":
        region, name = fact.region, fact.name
        if (
            region in index.presence
            and name in ("enter", "exit", "dwell")
            and latest(new.presence.get(region), t)
        ):
            new.presence[region] = (t, name)
        has_position = fact.lat is not None and fact.lon is not None
        if index.position and has_position and latest(new.position, t):
            new.position = (t, fact.lat, fact.lon)
    for spec, retention_ms in index.series_for(fact):
        if spec.matches(fact):
            old = new.series.get(spec.key, _EMPTY)
            series = Series(
                list(old.times), list(old.values), old.old_count, old.old_sum, old.old_first, old.old_last
            )
            series.add(fact.time_ms, spec.amount(fact))
            series.prune(now_ms - retention_ms)
            new.series[spec.key] = series
    return new


@dataclass(frozen=True)
class Measure:
    count: int
    total: float
    first: int | None
    last: int | None


def measure(series: Series, within_ms: int | None, now_ms: int) -> Measure:
    """Aggregates over entries with time <= now (and >= now - within, when windowed)."""
    hi = bisect_right(series.times, now_ms)
    # min/max rather than "aggregates are older": a merged series (facts.Series.merged) can hold
    # another person's aggregates pruned at a later clock than its own listed entries.
    first, last = series.old_first, series.old_last
    if hi and (first is None or series.times[0] < first):
        first = series.times[0]
    if hi and (last is None or series.times[hi - 1] > last):
        last = series.times[hi - 1]
    if within_ms is None:
        return Measure(series.old_count + hi, series.old_sum + sum(series.values[:hi]), first, last)
    lo = bisect_left(series.times, now_ms - within_ms)
    return Measure(max(hi - lo, 0), sum(series.values[lo:hi]), first, last)


def occurs(moment: int | None, bound: Occurrence, now_ms: int) -> bool:
    return (
        moment is not None
        and (bound.before is None or moment < bound.before.resolve(now_ms))
        and (bound.after is None or moment >= bound.after.resolve(now_ms))
    )


def holds(leaf: Any, m: Measure, now_ms: int) -> bool:
    """A counted leaf's test on its measure (sql.py also calls this on the empty measure)."""
    if leaf.first is not None:
        return occurs(m.first, leaf.first, now_ms)
    if leaf.last is not None:
        return occurs(m.last, leaf.last, now_ms)
    if isinstance(leaf, EventCondition) and leaf.sum is not None:
        s = leaf.sum
        return compare_total(m.total, s.gt, s.gte, s.lt, s.lte, s.between)
    low, high = leaf.count_range
    return m.count >= low and (high is None or m.count <= high)


def _leaf(leaf: Any, state: PersonState, now_ms: int) -> bool:
    if isinstance(leaf, AttributeCondition):
        entry = state.attributes.get(leaf.attribute)
        return test(leaf, entry[1] if entry else None)
    if isinstance(leaf, InsideCondition):
        entry = state.presence.get(leaf.inside)
        return entry is not None and entry[1] in INSIDE_KINDS
    if isinstance(leaf, NearCondition):
        pos, p = state.position, leaf.near
        return pos is not None and haversine_km(pos[1], pos[2], p.lat, p.lon) <= p.km
    series = state.series.get(spec_for(leaf).key, _EMPTY)
    return holds(leaf, measure(series, leaf.within, now_ms), now_ms)


def check(condition: Any, state: PersonState, now_ms: int) -> bool:
    if isinstance(condition, AllOf):
        return all(check(child, state, now_ms) for child in condition.all)
    if isinstance(condition, AnyOf):
        return any(check(child, state, now_ms) for child in condition.any)
    if isinstance(condition, Not):
        return not check(condition.not_, state, now_ms)
    return _leaf(condition, state, now_ms)


def evaluate(segment: Segment, state: PersonState, now_ms: int) -> bool:
    return check(segment.condition, state, now_ms)


def _leaf_changes(leaf: Any, state: PersonState, now_ms: int) -> Iterable[int]:
    if isinstance(leaf, AttributeCondition | InsideCondition | NearCondition):
        return  # latest-wins values do not depend on the clock
    series = state.series.get(spec_for(leaf).key, _EMPTY)
    times = series.times
    hi = bisect_right(times, now_ms)
    if hi < len(times):
        yield times[hi]  # a future-stamped fact starts to count
    if leaf.within is not None:
        lo = bisect_left(times, now_ms - leaf.within)
        if lo < hi:
            yield times[lo] + leaf.within + 1  # the oldest entry in the window leaves it
    if leaf.first is None and leaf.last is None:
        return
    m = measure(series, None, now_ms)
    for bound, moment in ((leaf.first, m.first), (leaf.last, m.last)):
        for ref in (bound.before, bound.after) if bound is not None else ():
            if moment is not None and ref is not None and ref.ago_ms is not None:
                yield moment + ref.ago_ms + 1  # "ago" bounds move with the clock


def next_change_ms(segment: Segment, state: PersonState, now_ms: int) -> int | None:
    due = [t for leaf in leaves(segment.condition) for t in _leaf_changes(leaf, state, now_ms) if t > now_ms]
    return min(due, default=None)


@dataclass(frozen=True)
class Transition:
    segment_id: str
    change: Literal["entered", "exited"]
    reason: str


def transitions(old_members: set[str], new_eval: Mapping[str, bool], reason: str) -> list[Transition]:
    """Changes for one person: segments evaluated true that were not members, and members now false."""
    changes = []
    for segment_id, member in sorted(new_eval.items()):
        if member and segment_id not in old_members:
            changes.append(Transition(segment_id, "entered", reason))
        elif not member and segment_id in old_members:
            changes.append(Transition(segment_id, "exited", reason))
    return changes
