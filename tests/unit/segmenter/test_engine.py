"""The streaming core: membership changes on facts and timers, and definition reloads."""

from __future__ import annotations

from services.segmenter.definitions import Segment, parse
from services.segmenter.engine import Change, Engine
from services.segmenter.evaluate import apply
from services.segmenter.facts import Fact, PersonState
from services.segmenter.index import Index
from tests.unit.segmenter.history import DAY, NOW


def segments(*docs: dict) -> dict[str, Segment]:
    return {s.id: s for s in parse({"segments": list(docs)})}


VISITED = {"id": "visited-7d", "condition": {"session": "started", "within": "7d"}}


class TestEngine:
    def test_a_person_leaves_a_window_segment_when_the_days_pass(self) -> None:
        """ "Visited in the last 7 days" is entered on the visit and exited by the timer 7 days later."""
        engine = Engine(Index.build(segments(VISITED)))
        visit = Fact("p", NOW, "session", "started")
        assert engine.on_fact(visit, NOW) == [Change("p", "visited-7d", "entered", NOW, "session:started")]
        assert engine.advance(NOW + 7 * DAY) == []
        assert engine.advance(NOW + 8 * DAY) == [
            Change("p", "visited-7d", "exited", NOW + 7 * DAY + 1, "timer")
        ]
        assert engine.member_ids("visited-7d") == set()

    def test_a_new_visit_postpones_the_exit(self) -> None:
        """A second visit inside the window moves the exit to 7 days after it."""
        engine = Engine(Index.build(segments(VISITED)))
        engine.on_fact(Fact("p", NOW, "session", "started"), NOW)
        engine.on_fact(Fact("p", NOW + 3 * DAY, "session", "started"), NOW + 3 * DAY)
        assert engine.advance(NOW + 9 * DAY) == []
        assert [c.time_ms for c in engine.advance(NOW + 11 * DAY)] == [NOW + 10 * DAY + 1]

    def test_timers_fire_before_a_later_fact_is_applied(self) -> None:
        """A fact arriving after a window ended first sees the exit, then its own entry."""
        engine = Engine(Index.build(segments(VISITED)))
        engine.on_fact(Fact("p", NOW, "session", "started"), NOW)
        later = NOW + 20 * DAY
        changes = engine.on_fact(Fact("p", later, "session", "started"), later)
        assert [(c.change, c.time_ms, c.reason) for c in changes] == [
            ("exited", NOW + 7 * DAY + 1, "timer"),
            ("entered", later, "session:started"),
        ]

    def test_state_restored_from_bytes_continues_exactly(self) -> None:
        """An engine rebuilt from serialised states (as after a restart) reaches the same memberships."""
        defs = segments(VISITED, {"id": "buyers", "condition": {"event": "Order Completed", "within": "30d"}})
        engine = Engine(Index.build(defs))
        for i in range(5):
            engine.on_fact(Fact(f"p{i}", NOW - i * 2 * DAY, "session", "started"), NOW)
            engine.on_fact(Fact(f"p{i}", NOW - i * 9 * DAY, "event", "Order Completed"), NOW)
        restored = Engine(Index.build(defs))
        states = {p: PersonState.from_bytes(s.to_bytes()) for p, s in engine.states.items()}
        assert restored.restore(states, {p: set(m) for p, m in engine.members.items()}, NOW) == []
        for now in (NOW + DAY, NOW + 10 * DAY, NOW + 40 * DAY):
            engine.advance(now)
            restored.advance(now)
            assert engine.members == restored.members


class TestReload:
    def test_removed_segments_exit_their_members_and_unchanged_ones_are_silent(self) -> None:
        """Removing a segment exits its members; keeping another changes nothing for it."""
        engine = Engine(Index.build(segments(VISITED, {"id": "gone", "condition": {"session": "started"}})))
        engine.on_fact(Fact("p", NOW, "session", "started"), NOW)
        result = engine.reload(segments(VISITED), NOW + 1)
        assert result.diff.removed == ("gone",)
        assert result.changes == [Change("p", "gone", "exited", NOW + 1, "definition")]
        assert engine.member_ids("visited-7d") == {"p"}

    def test_a_segment_reading_tracked_facts_is_evaluated_from_state_at_once(self) -> None:
        """A new 3-day window over a series already kept for 7 days gets its members immediately."""
        engine = Engine(Index.build(segments(VISITED)))
        engine.on_fact(Fact("a", NOW - DAY, "session", "started"), NOW)
        engine.on_fact(Fact("b", NOW - 5 * DAY, "session", "started"), NOW)
        new = {"id": "visited-3d", "condition": {"session": "started", "within": "3d"}}
        result = engine.reload(segments(VISITED, new), NOW)
        assert result.needs_history == frozenset()
        assert result.changes == [Change("a", "visited-3d", "entered", NOW, "definition")]

    def test_a_segment_needing_untracked_history_waits_for_its_seed(self) -> None:
        """A longer window than the state kept is pending until seeded with history's members and state."""
        engine = Engine(Index.build(segments(VISITED)))
        engine.on_fact(Fact("a", NOW - DAY, "session", "started"), NOW)
        longer = {"id": "visited-90d", "condition": {"session": "started", "within": "90d"}}
        defs = segments(VISITED, longer)
        result = engine.reload(defs, NOW)
        assert result.needs_history == {"visited-90d"}
        assert result.changes == []
        engine.on_fact(Fact("a", NOW, "session", "started"), NOW)
        assert engine.member_ids("visited-90d") == set()  # not evaluated while pending
        history = PersonState()  # what a replay of b's loaded history gives with the new index
        history = apply(Fact("b", NOW - 60 * DAY, "session", "started"), history, Index.build(defs), NOW)
        changes = engine.seed("visited-90d", {"a", "b"}, {"b": history}, NOW)
        assert {(c.person_id, c.change) for c in changes} == {("a", "entered"), ("b", "entered")}
        assert engine.advance(NOW + 31 * DAY)[-1] == Change(
            "b", "visited-90d", "exited", NOW + 30 * DAY + 1, "timer"
        )
