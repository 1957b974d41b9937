"""Pure evaluation: apply, evaluate (windows, measures, typing), next_change_ms and transitions."""

from __future__ import annotations

import random
from typing import Any

import pytest

from services.segmenter.definitions import Segment, load, parse
from services.segmenter.evaluate import Transition, apply, evaluate, next_change_ms, transitions
from services.segmenter.facts import Fact, PersonState
from services.segmenter.index import Index
from tests.unit.segmenter.history import DAY, HOUR, NOW, generate, oracle_segments
from tests.unit.segmenter.test_definitions import ROOT


def segment(condition: dict[str, Any]) -> Segment:
    return parse({"id": "s", "condition": condition})[0]


def state_of(seg: Segment, *facts: Fact, now: int = NOW) -> PersonState:
    index = Index.build({seg.id: seg})
    state = PersonState()
    for fact in facts:
        state = apply(fact, state, index, now)
    return state


def member(condition: dict[str, Any], *facts: Fact, now: int = NOW) -> bool:
    seg = segment(condition)
    return evaluate(seg, state_of(seg, *facts, now=min(now, NOW)), now)


def event(days_ago: float, name: str = "E", **properties: Any) -> Fact:
    return Fact("p", NOW - int(days_ago * DAY), "event", name, properties=properties)


def attr(name: str, value: Any, t: int = NOW) -> Fact:
    return Fact("p", t, "attribute", name, value=value)


class TestApply:
    def test_apply_returns_a_new_state_and_leaves_the_old_one_alone(self) -> None:
        """Applying a fact never changes the state it was given (tables may still hold it)."""
        seg = segment({"event": "E", "within": "7d"})
        before = state_of(seg, event(1))
        snapshot = before.to_bytes()
        after = apply(event(0), before, Index.build({"s": seg}), NOW)
        assert before.to_bytes() == snapshot
        assert after != before

    def test_an_older_attribute_value_never_overwrites_a_newer_one(self) -> None:
        """Latest-wins is by event time: a late, older profile update is ignored."""
        seg = segment({"attribute": "plan", "equals": "pro"})
        assert evaluate(seg, state_of(seg, attr("plan", "pro", NOW), attr("plan", "basic", NOW - DAY)), NOW)
        assert not evaluate(
            seg, state_of(seg, attr("plan", "pro", NOW - DAY), attr("plan", "basic", NOW)), NOW
        )

    def test_a_null_attribute_value_removes_the_attribute(self) -> None:
        """A later null makes ``exists: true`` false again."""
        assert not member(
            {"attribute": "email", "exists": True}, attr("email", "a@b", NOW - 1), attr("email", None)
        )


class TestWindows:
    @pytest.mark.parametrize(("offset", "inside"), [(0, True), (1, False), (-1, True)])
    def test_the_window_start_is_inclusive(self, offset: int, inside: bool) -> None:
        """A fact exactly ``within`` ago counts; one millisecond older does not."""
        fact = Fact("p", NOW - 7 * DAY - offset, "event", "E")
        assert member({"event": "E", "within": "7d"}, fact) is inside

    def test_a_fact_stamped_after_now_does_not_count_until_now_reaches_it(self) -> None:
        """A skewed-clock fact in the future is outside the window until its time comes."""
        fact = Fact("p", NOW + HOUR, "event", "E")
        assert not member({"event": "E", "within": "7d"}, fact, now=NOW)
        assert member({"event": "E", "within": "7d"}, fact, now=NOW + HOUR)

    def test_hours_windows_work_like_day_windows(self) -> None:
        """``within: 24h`` counts a fact 23 hours old and not one 25 hours old."""
        assert member({"event": "E", "within": "24h"}, event(23 / 24))
        assert not member({"event": "E", "within": "24h"}, event(25 / 24))


class TestMeasures:
    def test_at_least_and_at_most_bound_the_count_in_the_window(self) -> None:
        """Two to three facts in 30 days: two and three match, one and four do not."""
        cond = {"event": "E", "within": "30d", "at_least": 2, "at_most": 3}
        for n, expected in ((1, False), (2, True), (3, True), (4, False)):
            assert member(cond, *(event(i + 1) for i in range(n)), event(40)) is expected

    def test_never_holds_for_a_person_with_no_matching_facts(self) -> None:
        """``never`` is true on an empty history and false after one fact in the window."""
        assert member({"tag": "registered", "never": True}, event(1))
        assert not member({"tag": "registered", "never": True}, Fact("p", NOW, "tag", "registered"))

    def test_tag_value_restricts_the_count(self) -> None:
        """``value: dublin`` counts only the tag hits with that value."""
        cond = {"tag": "visited_store", "value": "dublin", "at_least": 2}
        hits = [
            Fact("p", NOW - i, "tag", "visited_store", value=v)
            for i, v in enumerate(["dublin", "cork", None])
        ]
        assert not member(cond, *hits)
        assert member(cond, *hits, Fact("p", NOW - 9, "tag", "visited_store", value="dublin"))

    def test_property_filters_must_all_hold(self) -> None:
        """An order counts only if every ``where`` filter matches its properties."""
        cond = {"event": "Order Completed", "where": [{"property": "category", "equals": "shoes"},
                                                        {"property": "revenue", "gte": 20}]}  # fmt: skip
        assert member(cond, event(1, "Order Completed", category="shoes", revenue=20))
        assert not member(cond, event(1, "Order Completed", category="shoes", revenue=19.5))
        assert not member(cond, event(1, "Order Completed", category="hats", revenue=99))
        assert not member(cond, event(1, "Order Completed", revenue=99))

    def test_sum_adds_numeric_values_in_the_window_only(self) -> None:
        """Sum over 30 days ignores older orders and non-numeric revenue, but the orders still exist."""
        cond = {"event": "Order Completed", "within": "30d", "sum": {"property": "revenue", "gte": 100}}
        recent = [event(1, "Order Completed", revenue=60), event(2, "Order Completed", revenue="free")]
        assert not member(cond, *recent, event(31, "Order Completed", revenue=60))
        assert member(cond, *recent, event(3, "Order Completed", revenue=40.0))

    def test_first_and_last_occurrence_against_dates_and_durations(self) -> None:
        """``first before`` a date and ``last before`` a duration ago read the earliest and latest facts."""
        history = [event(400), event(10)]
        assert member({"event": "E", "first": {"before": "2025-12-01"}}, *history)
        assert not member({"event": "E", "first": {"before": "2025-10-01"}}, *history)
        assert not member({"event": "E", "last": {"before": "30d"}}, *history)
        assert member({"event": "E", "last": {"before": "7d"}}, *history)
        assert not member({"event": "E", "last": {"before": "7d"}})

    def test_message_actions_cover_their_receipt_statuses(self) -> None:
        """``received`` counts sent and delivered; channel and campaign must match when given."""
        cond = {"message": "received", "channel": "email", "campaign": "bf", "at_least": 2}
        sent = Fact("p", NOW - 2, "message", "sent", channel="email", campaign="bf")
        delivered = Fact("p", NOW - 1, "message", "delivered", channel="email", campaign="bf")
        assert member(cond, sent, delivered)
        assert not member(
            cond, sent, Fact("p", NOW - 1, "message", "delivered", channel="sms", campaign="bf")
        )
        assert not member(cond, sent, Fact("p", NOW - 1, "message", "opened", channel="email", campaign="bf"))


class TestAttributesAndPlaces:
    @pytest.mark.parametrize(
        ("condition", "value", "expected"),
        [
            ({"gt": 500}, 500.5, True),
            ({"gt": 500}, 500, False),
            ({"gt": 500}, "900", False),  # numbers compare with numbers only
            ({"equals": 500}, 500.0, True),
            ({"equals": "ios"}, "ios", True),
            ({"equals": True}, "true", False),
            ({"in": ["pro", "max"]}, "max", True),
            ({"contains": "pro"}, "pro-plus", True),
            ({"before": "2025-01-01"}, "2024-12-31T23:59:59.999Z", True),
            ({"before": "2025-01-01"}, "2025-01-01", False),
            ({"after": "2025-01-01"}, "2025-01-01", True),
            ({"before": "2025-01-01"}, "n/a", False),
            ({"between": ["2024-01-01", "2024-12-31"]}, "2024-12-31", True),
            ({"exists": False}, None, True),
        ],
    )
    def test_attribute_tests_are_strictly_typed(self, condition: dict, value: Any, expected: bool) -> None:
        """Each operator applies to values of the operand's type only, with documented boundaries."""
        assert member({"attribute": "a", **condition}, attr("a", value)) is expected

    def test_inside_follows_the_latest_enter_or_exit(self) -> None:
        """Entering then exiting leaves the person outside, even if the exit arrived first."""
        enter = Fact("p", NOW - 10, "location", "enter", region="store")
        exit_ = Fact("p", NOW - 5, "location", "exit", region="store")
        assert member({"inside": "store"}, enter)
        assert not member({"inside": "store"}, exit_, enter)

    def test_near_uses_the_last_known_position(self) -> None:
        """A person whose latest position is 5 km away is within 10 km, not within 4 km."""
        far = Fact("p", NOW - 10, "location", "gps", lat=53.0, lon=-6.0)
        close = Fact("p", NOW - 5, "location", "gps", lat=53.35 + 5 / 111.2, lon=-6.26)
        assert member({"near": {"lat": 53.35, "lon": -6.26, "km": 10}}, far, close)
        assert not member({"near": {"lat": 53.35, "lon": -6.26, "km": 4}}, far, close)

    def test_the_reference_example_keeps_readers_who_stopped_buying(self) -> None:
        """Opened an email in 6 months with no order or session then: member; a session 10 days ago: not."""
        seg = load(ROOT / "config" / "segments.example.yaml")["lapsed-but-reading"]
        opened = Fact("p", NOW - 20 * DAY, "message", "opened", channel="email")
        old_order = event(200, "Order Completed")
        assert evaluate(seg, state_of(seg, opened, old_order), NOW)
        assert not evaluate(
            seg, state_of(seg, opened, old_order, Fact("p", NOW - 10 * DAY, "session", "started")), NOW
        )


class TestNextChange:
    def test_a_visit_leaves_the_window_one_millisecond_after_it_ends(self) -> None:
        """The next change of "visited in 7 days" is the visit plus 7 days plus 1 ms, and it flips then."""
        seg = segment({"event": "visit", "within": "7d"})
        visit = Fact("p", NOW - 2 * DAY, "event", "visit")
        state = state_of(seg, visit)
        due = next_change_ms(seg, state, NOW)
        assert due == visit.time_ms + 7 * DAY + 1
        assert evaluate(seg, state, due - 1) and not evaluate(seg, state, due)

    def test_a_future_fact_schedules_its_own_arrival(self) -> None:
        """A fact stamped ahead of now makes now reach it the next change."""
        seg = segment({"event": "E"})
        assert next_change_ms(seg, state_of(seg, Fact("p", NOW + HOUR, "event", "E")), NOW) == NOW + HOUR

    def test_relative_bounds_move_with_the_clock(self) -> None:
        """``last: {before: 30d}`` becomes true 30 days and 1 ms after the last order."""
        seg = segment({"event": "E", "last": {"before": "30d"}})
        state = state_of(seg, event(10))
        due = next_change_ms(seg, state, NOW)
        assert due == NOW - 10 * DAY + 30 * DAY + 1
        assert not evaluate(seg, state, due - 1) and evaluate(seg, state, due)

    def test_timeless_conditions_need_no_timer(self) -> None:
        """Attributes, presence and all-time counts of past facts never change on their own."""
        seg = segment({"all": [{"attribute": "plan", "exists": True}, {"inside": "r"}, {"event": "E"}]})
        assert next_change_ms(seg, state_of(seg, attr("plan", "pro"), event(3)), NOW) is None

    def test_the_next_change_is_never_late(self) -> None:
        """Between now and the next change time, membership of a busy history stays constant."""
        seg = segment(
            {"any": [{"event": "E", "within": "3d", "at_least": 2}, {"event": "F", "within": "1d"}]}
        )
        state = state_of(seg, *(event(d) for d in (0.5, 1.2, 2.9, 3.5)), event(0.7, "F"))
        now, steps = NOW, 0
        while (due := next_change_ms(seg, state, now)) is not None:
            probes = [*range(now, due, max((due - now) // 50, 1)), due - 1]
            assert len({evaluate(seg, state, t) for t in probes}) == 1
            now, steps = due, steps + 1
        assert steps == 4  # three E entries and one F entry leave their windows
        assert not any(evaluate(seg, state, now + k * DAY) for k in range(30))

    def test_the_next_change_is_never_late_on_random_histories(self) -> None:
        """For each oracle segment and person of a random history, membership holds until the next change."""
        rng = random.Random(5)
        segments = oracle_segments()
        index = Index.build({s.id: s for s in segments})
        states: dict[str, PersonState] = {}
        for arrival in generate(5):
            person = arrival.fact.person_id
            states[person] = apply(arrival.fact, states.get(person, PersonState()), index, arrival.at_ms)
        flips = 0
        for seg in segments:
            for state in states.values():
                now = NOW
                for _ in range(4):
                    due = next_change_ms(seg, state, now)
                    if due is None:
                        break
                    here = evaluate(seg, state, now)
                    probes = [due - 1, *(rng.randrange(now, due) for _ in range(3))]
                    assert all(evaluate(seg, state, t) == here for t in probes), (seg.id, now, due)
                    flips += evaluate(seg, state, due) != here
                    now = due
        assert flips > 50  # the walk crossed many real membership changes


class TestTransitions:
    def test_changes_name_entered_and_exited_segments_with_the_reason(self) -> None:
        """Newly true segments are entered, no longer true members are exited, unchanged ones are silent."""
        found = transitions(
            {"a", "b"}, {"a": True, "b": False, "c": True, "d": False}, "event:Order Completed"
        )
        assert found == [Transition("b", "exited", "event:Order Completed"),
                         Transition("c", "entered", "event:Order Completed")]  # fmt: skip
