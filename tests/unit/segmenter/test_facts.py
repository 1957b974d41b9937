"""Per-person state: exact series with pruning into aggregates, latest-wins values, byte round trips."""

from __future__ import annotations

from services.segmenter.definitions import parse
from services.segmenter.evaluate import apply, measure
from services.segmenter.facts import Fact, PersonState, Series
from services.segmenter.index import Index
from tests.unit.segmenter.history import DAY, NOW, generate


class TestSeries:
    def test_entries_stay_sorted_whatever_the_arrival_order(self) -> None:
        """Late facts are inserted in time order, with their summed values alongside."""
        series = Series()
        for t, v in ((30, 3.0), (10, 1.0), (20, 2.0), (10, 0.5)):
            series.add(t, v)
        assert series.times == [10, 10, 20, 30]
        assert sorted(series.values) == [0.5, 1.0, 2.0, 3.0]
        assert series.values[2:] == [2.0, 3.0]

    def test_pruning_folds_old_entries_into_exact_all_time_aggregates(self) -> None:
        """Entries older than the cut leave the list but all-time count, sum, first and last are unchanged."""
        series = Series()
        for t in (5, 10, 15, 20, 25):
            series.add(t, float(t))
        before = measure(series, None, 100)
        series.prune(16)
        assert series.times == [20, 25]
        assert measure(series, None, 100) == before
        series.prune(30)
        assert series.times == [] and measure(series, None, 100) == before


class TestPersonState:
    def test_state_round_trips_through_bytes(self) -> None:
        """A state built from a random history decodes from its bytes to an equal state."""
        segments = {s.id: s for s in parse({"segments": [
            {"id": "a", "condition": {"attribute": "plan", "equals": "pro"}},
            {"id": "b", "condition": {"event": "Order Completed", "within": "30d",
                                      "sum": {"property": "revenue", "gt": 10}}},
            {"id": "c", "condition": {"any": [{"inside": "store-dublin"},
                                              {"near": {"lat": 53, "lon": -6, "km": 9}}]}},
            {"id": "d", "condition": {"message": "opened", "within": "7d"}},
        ]})}  # fmt: skip
        index = Index.build(segments)
        states: dict[str, PersonState] = {}
        for arrival in generate(3):
            person = arrival.fact.person_id
            states[person] = apply(arrival.fact, states.get(person, PersonState()), index, arrival.at_ms)
        assert any(s.series and s.attributes and s.position for s in states.values())
        for state in states.values():
            assert PersonState.from_bytes(state.to_bytes()) == state

    def test_only_what_segments_read_is_stored(self) -> None:
        """Attributes, regions and events no segment references leave the state empty."""
        index = Index.build(
            {s.id: s for s in parse({"id": "a", "condition": {"attribute": "plan", "exists": True}})}
        )
        state = PersonState()
        for fact in (
            Fact("p", NOW, "attribute", "nickname", value="Ann"),
            Fact("p", NOW, "event", "Order Completed", properties={"revenue": 3}),
            Fact("p", NOW, "location", "enter", region="store-cork", lat=53.0, lon=-6.0),
        ):
            state = apply(fact, state, index, NOW)
        assert state == PersonState()

    def test_windowed_series_are_kept_only_as_far_back_as_the_longest_window(self) -> None:
        """With 7-day and 30-day windows on one event, entries older than 30 days are aggregated away."""
        index = Index.build({s.id: s for s in parse({"segments": [
            {"id": "a", "condition": {"event": "E", "within": "7d"}},
            {"id": "b", "condition": {"event": "E", "within": "30d", "at_least": 2}},
        ]})})  # fmt: skip
        state = PersonState()
        for days_ago in (100, 40, 29, 6, 1):
            state = apply(Fact("p", NOW - days_ago * DAY, "event", "E"), state, index, NOW)
        (series,) = state.series.values()
        assert series.times == [NOW - 29 * DAY, NOW - 6 * DAY, NOW - DAY]
        assert series.old_count == 2
