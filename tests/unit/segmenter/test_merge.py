"""Merges in the core: a merged-away person's state folded into the survivor's gives the membership
of one person who had all those facts (what the SQL recomputation counts), and the merged-away
person is a member of nothing."""

from __future__ import annotations

import random

import pytest

from services.segmenter.engine import Change, Engine
from services.segmenter.evaluate import apply, evaluate
from services.segmenter.facts import Fact, PersonState, Series
from services.segmenter.index import Index
from tests.unit.segmenter.history import DAY, HOUR, NOW, Arrival, generate, oracle_segments
from tests.unit.segmenter.test_engine import VISITED, segments

SEGMENTS = oracle_segments()
REFERENCE_TIMES = (NOW, NOW + 1, NOW + HOUR, NOW + DAY + 1, NOW + 3 * DAY, NOW + 40 * DAY, NOW + 200 * DAY)


class TestFold:
    def test_series_interleave_entries_and_add_aggregates(self) -> None:
        a = Series([10, 30], [1.0, 3.0], old_count=2, old_sum=5.0, old_first=1, old_last=5)
        b = Series([20], [2.0], old_count=1, old_sum=0.5, old_first=3, old_last=8)
        m = a.merged(b)
        assert (m.times, m.values) == ([10, 20, 30], [1.0, 2.0, 3.0])
        assert (m.old_count, m.old_sum, m.old_first, m.old_last) == (3, 5.5, 1, 8)
        assert (a.times, b.times) == ([10, 30], [20])  # inputs untouched

    def test_latest_wins_by_event_time_for_attributes_presence_and_position(self) -> None:
        mine = PersonState({"plan": (5, "pro"), "city": (9, "Oslo")}, {"r": (5, "enter")}, (5, 1.0, 1.0))
        theirs = PersonState({"plan": (7, "max"), "city": (2, "Rome"), "age": (1, 30.0)}, {"r": (3, "exit")})
        m = mine.merged(theirs)
        assert m.attributes == {"plan": (7, "max"), "city": (9, "Oslo"), "age": (1, 30.0)}
        assert m.presence == {"r": (5, "enter")}
        assert m.position == (5, 1.0, 1.0)
        assert mine.attributes["plan"] == (5, "pro")

    def test_first_and_last_hold_when_aggregates_were_pruned_later_than_listed_entries(self) -> None:
        """A merged series can list an entry older than the other person's pruned aggregates."""
        early = {"id": "early", "condition": {"session": "started", "first": {"before": "2020-01-01"}}}
        engine = Engine(Index.build(segments(early)))
        key = next(iter(engine.index.retention))
        old = Series([], [], old_count=1, old_sum=0.0, old_first=NOW - 10 * DAY, old_last=NOW - 10 * DAY)
        listed = Series([1_500_000_000_000])  # 2017, before the bound
        state = PersonState(series={key: old.merged(listed)})
        assert evaluate(engine.index.segments["early"], state, NOW)


class TestEngineMerge:
    def test_the_merged_away_person_exits_and_the_survivor_enters_with_its_facts(self) -> None:
        twice = {"id": "twice", "condition": {"session": "started", "at_least": 2}}
        engine = Engine(Index.build(segments(VISITED, twice)))
        engine.on_fact(Fact("anon", NOW - DAY, "session", "started"), NOW - DAY)
        engine.on_fact(Fact("user", NOW - 2 * DAY, "session", "started"), NOW - DAY)
        changes, state = engine.remove("anon", NOW)
        assert changes == [Change("anon", "visited-7d", "exited", NOW, "merge")]
        assert "anon" not in engine.states and "anon" not in engine.members
        assert state is not None
        assert engine.absorb("user", state, NOW) == [Change("user", "twice", "entered", NOW, "merge")]
        # the survivor's timer covers the merged-away visit too; the merged-away person has none
        assert engine.advance(NOW + 6 * DAY - 1) == []
        exit_at = NOW + 6 * DAY + 1  # the merged-away visit (NOW - DAY) leaves the 7-day window
        assert engine.advance(NOW + 7 * DAY) == [Change("user", "visited-7d", "exited", exit_at, "timer")]

    def test_removing_an_unknown_person_changes_nothing(self) -> None:
        engine = Engine(Index.build(segments(VISITED)))
        assert engine.remove("nobody", NOW) == ([], None)

    @pytest.mark.parametrize("seed", [3, 11, 2026])
    def test_merging_mid_stream_equals_one_person_with_all_the_facts(self, seed: int) -> None:
        """A random history with merges (chains too) mid-stream: every segment's members at every
        reference time equal those of the same history with the merged-away ids replaced by their
        survivors from the start (the SQL recomputation's view, which the oracle checks against
        ClickHouse). After its merge, a merged-away person's facts arrive under the survivor (the
        enricher routes its devices there), or late under its own id (its partition lagging):
        those are folded in as a state of their own, as the service does."""
        rng = random.Random(seed)
        arrivals = generate(seed, persons=30, facts=1500)
        people = sorted({a.fact.person_id for a in arrivals})
        merged_away = rng.sample(people[:-1], 10)
        survivors = [p for p in people if p not in merged_away]
        into = {a: rng.choice(survivors) for a in merged_away[:8]}
        into[merged_away[8]], into[merged_away[9]] = merged_away[0], merged_away[1]  # chains: x → a → s
        final = {a: _final(into, a) for a in into}
        arrivals = _without_ties(arrivals, final)
        at = {a: arrivals[rng.randrange(len(arrivals) // 4, len(arrivals))].at_ms for a in into}
        for a, s in into.items():  # a chain's later link merges after the earlier one
            if s in into:
                at[a], at[s] = min(at[a], at[s]), max(at[a], at[s])

        reference = Engine(Index.build({s.id: s for s in SEGMENTS}))
        for arrival in arrivals:
            f = arrival.fact
            reference.on_fact(_as(f, final.get(f.person_id, f.person_id)), arrival.at_ms)

        engine = Engine(Index.build({s.id: s for s in SEGMENTS}))
        done: dict[str, str] = {}  # merged-away → the person it was merged into
        pending = sorted(at.items(), key=lambda kv: kv[1])
        for arrival in arrivals:
            while pending and pending[0][1] <= arrival.at_ms:
                a, when = pending.pop(0)
                _, state = engine.remove(a, when)
                done[a] = into[a]
                if state is not None:
                    engine.absorb(_final(done, a), state, when)
            f = arrival.fact
            if f.person_id in done:
                if rng.random() < 0.5:  # routed to the survivor by the enricher
                    engine.on_fact(_as(f, _final(done, f.person_id)), arrival.at_ms)
                else:  # late under its own id: forwarded as a state of its own
                    state = apply(f, PersonState(), engine.index, arrival.at_ms)
                    engine.absorb(_final(done, f.person_id), state, arrival.at_ms)
            else:
                engine.on_fact(f, arrival.at_ms)
        for a, when in pending:
            _, state = engine.remove(a, when)
            done[a] = into[a]
            if state is not None:
                engine.absorb(_final(done, a), state, when)

        mismatches = []
        for now in REFERENCE_TIMES:
            engine.advance(now)
            reference.advance(now)
            for segment in SEGMENTS:
                got, want = engine.member_ids(segment.id), reference.member_ids(segment.id)
                pure = {p for p, st in engine.states.items() if evaluate(segment, st, now)}
                if not got == want == pure:
                    mismatches.append((segment.id, now - NOW, sorted(got ^ want), sorted(pure ^ want)))
        assert mismatches == []
        assert not set(into) & set(engine.states)
        assert sum(1 for s in SEGMENTS if reference.member_ids(s.id)) > len(SEGMENTS) // 3  # not vacuous


def _final(into: dict[str, str], person: str) -> str:
    while person in into:
        person = into[person]
    return person


def _as(fact: Fact, person: str) -> Fact:
    return Fact(person, fact.time_ms, fact.kind, fact.name, fact.value, fact.properties, fact.channel,
                fact.campaign, fact.region, fact.lat, fact.lon)  # fmt: skip


def _without_ties(arrivals: list[Arrival], final: dict[str, str]) -> list[Arrival]:
    """Drop facts that would share a millisecond with another fact of the merged person (latest
    wins has no tie rule, in SQL either)."""
    seen: set[tuple[str, int]] = set()
    kept = []
    for a in arrivals:
        key = (final.get(a.fact.person_id, a.fact.person_id), a.fact.time_ms)
        if key not in seen:
            seen.add(key)
            kept.append(a)
    return kept
