"""The inverted index: per-fact work depends on the segments that read what the fact touches."""

from __future__ import annotations

from services.segmenter.definitions import Segment, parse
from services.segmenter.engine import Engine
from services.segmenter.facts import Fact
from services.segmenter.index import Index
from tests.unit.segmenter.history import NOW


def many_segments(n: int) -> dict[str, Segment]:
    """``n`` segments over ``n`` distinct events, tags, attributes, campaigns and regions, in rotation."""
    conditions = [
        lambda i: {"event": f"event-{i}", "within": "7d"},
        lambda i: {"tag": f"tag-{i}", "at_least": 2},
        lambda i: {"attribute": f"attr-{i}", "gt": i},
        lambda i: {"message": "clicked", "campaign": f"campaign-{i}", "within": "30d"},
        lambda i: {"all": [{"inside": f"region-{i}"}, {"event": f"event-{i}"}]},
    ]
    docs = [{"id": f"s{i:04d}", "condition": conditions[i % len(conditions)](i)} for i in range(n)]
    return {s.id: s for s in parse({"segments": docs})}


class TestIndex:
    def test_a_fact_touching_nothing_evaluates_no_segment_among_a_thousand(self) -> None:
        """With 1,000 segments defined, facts no segment reads cause zero evaluations."""
        engine = Engine(Index.build(many_segments(1000)))
        engine.on_fact(Fact("p", NOW - 10, "event", "event-0"), NOW - 10)  # p is now known
        before = engine.evaluations
        for fact in (
            Fact("p", NOW, "event", "Unrelated"),
            Fact("p", NOW, "tag", "event-0"),  # same name, other kind
            Fact("p", NOW, "attribute", "nickname", value="x"),
            Fact("p", NOW, "location", "enter", region="elsewhere"),
            Fact("p", NOW, "session", "started"),
        ):
            engine.on_fact(fact, NOW)
        assert engine.evaluations == before

    def test_a_fact_evaluates_exactly_the_segments_that_reference_it(self) -> None:
        """An event read by two of 1,000 segments evaluates those two and no others."""
        segments = many_segments(1000)
        index = Index.build(segments)
        assert index.segments_for(Fact("p", NOW, "event", "event-5")) == {"s0005"}
        assert index.segments_for(Fact("p", NOW, "event", "event-4")) == {"s0004"}
        assert index.segments_for(Fact("p", NOW, "location", "exit", region="region-9")) == {"s0009"}
        assert index.segments_for(Fact("p", NOW, "message", "link_clicked", campaign="campaign-3")) == {
            f"s{i:04d}" for i in range(3, 1000, 5)
        }  # the index is by status; the campaign is checked when the series matches

    def test_work_per_fact_does_not_grow_with_the_number_of_segments(self) -> None:
        """One stream costs the same evaluations with 10 or 1,000 segments when it touches the same ones."""
        costs = []
        for n in (10, 1000):
            engine = Engine(Index.build(many_segments(n)))
            for i, name in enumerate(["event-0", "event-4", "Unrelated", "event-0"]):
                engine.on_fact(Fact("p", NOW + i, "event", name), NOW + i)
            costs.append(engine.evaluations)
        assert costs[0] == costs[1] == 3

    def test_segments_true_for_an_unknown_person_are_evaluated_when_a_person_first_appears(self) -> None:
        """``never`` and ``not`` segments hold for a new person whose first fact touches nothing they read."""
        segments = {s.id: s for s in parse({"segments": [
            {"id": "never-bought", "condition": {"event": "Order Completed", "never": True}},
            {"id": "not-vip", "condition": {"not": {"attribute": "vip", "equals": True}}},
            {"id": "bought", "condition": {"event": "Order Completed"}},
        ]})}  # fmt: skip
        engine = Engine(Index.build(segments))
        assert engine.index.vacuous == {"never-bought", "not-vip"}
        changes = engine.on_fact(Fact("p", NOW, "event", "Page Viewed"), NOW)
        assert {(c.segment_id, c.change) for c in changes} == {
            ("never-bought", "entered"),
            ("not-vip", "entered"),
        }

    def test_leaves_with_the_same_selector_share_one_series_kept_for_the_longest_window(self) -> None:
        """Two segments counting the same event over 7 and 90 days share one series retained for 90 days."""
        segments = {s.id: s for s in parse({"segments": [
            {"id": "a", "condition": {"event": "E", "within": "7d"}},
            {"id": "b", "condition": {"event": "E", "within": "90d", "at_least": 3}},
            {"id": "c", "condition": {"event": "E", "where": [{"property": "x", "equals": 1}]}},
        ]})}  # fmt: skip
        index = Index.build(segments)
        assert sorted(index.retention.values()) == [0, 90 * 86_400_000]
        assert len(index.series_for(Fact("p", NOW, "event", "E"))) == 2
