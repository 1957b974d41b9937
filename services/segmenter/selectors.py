"""What a leaf selects and what a fact touches: series specs and touch keys.

A *series* is the list of facts matching one counted leaf's selector (kind, name(s), tag value,
property filters, channel/campaign, region, summed property). Leaves with the same selector share
one series, whatever their windows, so state grows with distinct selectors, not with segments.
A *touch key* is the coarse thing a fact is about (``("event", "Order Completed")``,
``("message", "opened")``, ``("region", "store-dublin")``...): the inverted index maps touch keys to
the segments and series that read them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from services.segmenter.conditions import (
    ACTION_STATUSES,
    AttributeCondition,
    EventCondition,
    InsideCondition,
    LocationCondition,
    MessageCondition,
    NearCondition,
    PropertyFilter,
    SessionCondition,
    TagCondition,
)
from services.segmenter.facts import Fact
from services.segmenter.predicates import is_number, test

Touch = tuple[str, ...]
LOCATION_ACTIONS = {"entered": "enter", "dwelled": "dwell"}


@dataclass(frozen=True)
class SeriesSpec:
    key: str  # stable text: the state's series are stored under it
    kind: str
    names: tuple[str, ...]
    tag_value: str | None = None
    where: tuple[PropertyFilter, ...] = ()
    channel: str | None = None
    campaign: str | None = None
    region: str | None = None
    sum_property: str | None = None

    def matches(self, fact: Fact) -> bool:
        if fact.kind != self.kind or fact.name not in self.names:
            return False
        if self.kind == "tag":
            return self.tag_value is None or fact.value == self.tag_value
        if self.kind == "event":
            return all(test(f, fact.properties.get(f.property)) for f in self.where)
        if self.kind == "message":
            return (self.channel is None or fact.channel == self.channel) and (
                self.campaign is None or fact.campaign == self.campaign
            )
        if self.kind == "location":
            return fact.region == self.region
        return True  # session

    def amount(self, fact: Fact) -> float | None:
        """What this series sums for a matching fact (non-numbers count as 0); None if it does not sum."""
        if self.sum_property is None:
            return None
        raw = fact.properties.get(self.sum_property)
        return float(raw) if is_number(raw) else 0.0

    @property
    def touches(self) -> list[Touch]:
        if self.kind == "location":
            return [("region", self.region or "")]
        if self.kind == "session":
            return [("session",)]
        return [(self.kind, name) for name in self.names]


CountedLeaf = EventCondition | TagCondition | MessageCondition | LocationCondition | SessionCondition
_SPECS: dict[int, tuple[Any, SeriesSpec]] = {}  # id(leaf) → (leaf kept alive so ids are not reused, spec)


def spec_for(leaf: CountedLeaf) -> SeriesSpec:
    cached = _SPECS.get(id(leaf))
    if cached is not None and cached[0] is leaf:
        return cached[1]
    spec = _build(leaf)
    _SPECS[id(leaf)] = (leaf, spec)
    return spec


def _build(leaf: CountedLeaf) -> SeriesSpec:
    if isinstance(leaf, EventCondition):
        fields: dict[str, Any] = {
            "kind": "event",
            "names": (leaf.event,),
            "where": tuple(leaf.where),
            "sum_property": leaf.sum.property if leaf.sum else None,
        }
    elif isinstance(leaf, TagCondition):
        fields = {"kind": "tag", "names": (leaf.tag,), "tag_value": leaf.value}
    elif isinstance(leaf, MessageCondition):
        fields = {
            "kind": "message",
            "names": ACTION_STATUSES[leaf.message],
            "channel": leaf.channel,
            "campaign": leaf.campaign,
        }
    elif isinstance(leaf, LocationCondition):
        fields = {"kind": "location", "names": (LOCATION_ACTIONS[leaf.action],), "region": leaf.location}
    else:
        fields = {"kind": "session", "names": ("started",)}
    described = {k: v for k, v in fields.items() if v not in (None, ())}
    described["where"] = [
        f.model_dump(mode="json", by_alias=True, exclude_none=True) for f in fields.get("where", ())
    ]
    return SeriesSpec(key=json.dumps(described, sort_keys=True, separators=(",", ":")), **fields)


def leaf_touches(leaf: Any) -> list[Touch]:
    if isinstance(leaf, AttributeCondition):
        return [("attribute", leaf.attribute)]
    if isinstance(leaf, InsideCondition):
        return [("region", leaf.inside)]
    if isinstance(leaf, NearCondition):
        return [("position",)]
    return spec_for(leaf).touches


def fact_touches(fact: Fact) -> list[Touch]:
    if fact.kind == "location":
        touches: list[Touch] = [("region", fact.region)] if fact.region else []
        if fact.lat is not None and fact.lon is not None:
            touches.append(("position",))
        return touches
    if fact.kind == "session":
        return [("session",)]
    return [(fact.kind, fact.name)]
