"""Inverted index from what a fact touches to the segments and series that read it.

Built once per set of definitions (and rebuilt on reload). Per fact the segmenter looks up the
fact's one or two touch keys, so the work per fact depends on the segments that reference what the
fact touches, never on how many segments exist. Two extra answers keep streaming exact:
- ``vacuous``: segments true for a person nobody knows anything about (``never``, ``not``,
  ``at_most``...). They are evaluated once when a person first appears, whatever the fact, because
  the ClickHouse oracle counts every known person;
- ``retention``: per series the longest window that reads it, so state is pruned no further.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.segmenter.conditions import AttributeCondition, InsideCondition, NearCondition, leaves
from services.segmenter.definitions import Segment
from services.segmenter.evaluate import evaluate
from services.segmenter.facts import Fact, PersonState
from services.segmenter.selectors import SeriesSpec, Touch, fact_touches, leaf_touches, spec_for


@dataclass
class Index:
    segments: dict[str, Segment]
    by_touch: dict[Touch, set[str]] = field(default_factory=dict)
    series_by_touch: dict[Touch, list[tuple[SeriesSpec, int]]] = field(default_factory=dict)
    retention: dict[str, int] = field(default_factory=dict)  # series key → longest window (0: none)
    attributes: set[str] = field(default_factory=set)
    presence: set[str] = field(default_factory=set)
    position: bool = False
    vacuous: frozenset[str] = frozenset()
    time_dependent: frozenset[str] = frozenset()  # segments with a counted leaf

    @classmethod
    def build(cls, segments: Mapping[str, Segment]) -> Index:
        index = cls(dict(segments))
        by_touch: dict[Touch, set[str]] = defaultdict(set)
        specs: dict[str, SeriesSpec] = {}
        timed: set[str] = set()
        for segment_id, segment in segments.items():
            for leaf in leaves(segment.condition):
                for touch in leaf_touches(leaf):
                    by_touch[touch].add(segment_id)
                if isinstance(leaf, AttributeCondition):
                    index.attributes.add(leaf.attribute)
                elif isinstance(leaf, InsideCondition):
                    index.presence.add(leaf.inside)
                elif isinstance(leaf, NearCondition):
                    index.position = True
                else:
                    spec = spec_for(leaf)
                    specs[spec.key] = spec
                    window = leaf.within or 0
                    index.retention[spec.key] = max(index.retention.get(spec.key, 0), window)
                    timed.add(segment_id)  # windows, relative bounds and future-stamped facts move with time
        index.by_touch = dict(by_touch)
        series_by_touch: dict[Touch, list[tuple[SeriesSpec, int]]] = defaultdict(list)
        for key, spec in sorted(specs.items()):
            for touch in spec.touches:
                series_by_touch[touch].append((spec, index.retention[key]))
        index.series_by_touch = dict(series_by_touch)
        # The empty state has no facts, so this does not depend on the clock.
        index.vacuous = frozenset(sid for sid, seg in segments.items() if evaluate(seg, PersonState(), 0))
        index.time_dependent = frozenset(timed)
        return index

    def only(self, segment_ids: Iterable[str]) -> Index:
        """The index of some of these segments, keeping this index's retention for their series
        (state rebuilt with it must serve every segment that shares those series)."""
        sub = Index.build({sid: self.segments[sid] for sid in segment_ids})
        sub.retention = {key: self.retention[key] for key in sub.retention}
        sub.series_by_touch = {
            touch: [(spec, sub.retention[spec.key]) for spec, _ in entries]
            for touch, entries in sub.series_by_touch.items()
        }
        return sub

    def segments_for(self, fact: Fact) -> set[str]:
        found: set[str] = set()
        for touch in fact_touches(fact):
            found |= self.by_touch.get(touch, set())
        return found

    def series_for(self, fact: Fact) -> list[tuple[SeriesSpec, int]]:
        return [entry for touch in fact_touches(fact) for entry in self.series_by_touch.get(touch, ())]
