"""The segmenter's input (:class:`Fact`) and per-person state (:class:`PersonState`).

A ``Fact`` is what an adapter makes of one enriched record: who, when (UTC epoch ms), which kind of
thing happened and its details. Nothing here knows Kafka or Avro, so wiring the segmenter to the
``enriched`` topic is a mapping from the envelope to ``Fact``.

``PersonState`` holds only what the defined segments need:
- latest value per referenced attribute, latest enter/exit/dwell per referenced region and the last
  known position (latest-wins by event time; an older fact never overwrites a newer one);
- per tracked series (one per distinct selector, see ``index.SeriesSpec``) the sorted times (and
  summed values) of matching facts, kept back to the longest window that reads the series; older
  entries are folded into exact all-time aggregates (count, sum, first, last), so windowed counts
  and all-time counts stay exact while the state stays bounded.
State serialises to compact JSON bytes for a changelog-backed table.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right, insort
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

FactKind = Literal["attribute", "tag", "event", "message", "location", "session"]


@dataclass(frozen=True)
class Fact:
    """One thing known about a person at a time.

    kind       name                         other fields used
    attribute  attribute name               value (JSON scalar; None removes the attribute)
    tag        tag name                     value (str or None)
    event      event name                   properties (JSON object)
    message    receipt status (opened...)   channel, campaign
    location   enter | exit | dwell | gps   region (id, for enter/exit/dwell), lat/lon (if known)
    session    "started"                    -
    """

    person_id: str
    time_ms: int
    kind: FactKind
    name: str
    value: Any = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    channel: str | None = None
    campaign: str | None = None
    region: str | None = None
    lat: float | None = None
    lon: float | None = None


@dataclass
class Series:
    """Matching facts of one tracked selector: recent ones listed, older ones aggregated."""

    times: list[int] = field(default_factory=list)  # sorted ascending
    values: list[float] = field(default_factory=list)  # parallel to times when the series sums
    old_count: int = 0  # aggregates of entries pruned out of every window (all before the prune time)
    old_sum: float = 0.0
    old_first: int | None = None
    old_last: int | None = None

    def add(self, time_ms: int, value: float | None) -> None:
        if value is None:
            insort(self.times, time_ms)
            return
        at = bisect_right(self.times, time_ms)
        self.times.insert(at, time_ms)
        self.values.insert(at, value)

    def prune(self, keep_from_ms: int) -> None:
        """Fold entries older than ``keep_from_ms`` into the all-time aggregates."""
        cut = bisect_left(self.times, keep_from_ms)
        if cut == 0:
            return
        self.old_count += cut
        self.old_sum += sum(self.values[:cut])
        self.old_first = self.times[0] if self.old_first is None else min(self.old_first, self.times[0])
        self.old_last = (
            self.times[cut - 1] if self.old_last is None else max(self.old_last, self.times[cut - 1])
        )
        del self.times[:cut]
        del self.values[:cut]

    def merged(self, other: Series) -> Series:
        """Both persons' matching facts as one series (a merge): entries interleaved by time,
        all-time aggregates added. Exact whatever the two were pruned to: a window never reaches
        back past either prune point, and the all-time measures add up."""
        if self.values or other.values:  # a summing series: values stay parallel to times
            mine, theirs = (
                zip(self.times, self.values, strict=True),
                zip(other.times, other.values, strict=True),
            )
            pairs = sorted([*mine, *theirs])
            times, values = [t for t, _ in pairs], [v for _, v in pairs]
        else:
            times, values = sorted([*self.times, *other.times]), []
        firsts = [t for t in (self.old_first, other.old_first) if t is not None]
        lasts = [t for t in (self.old_last, other.old_last) if t is not None]
        return Series(
            times,
            values,
            self.old_count + other.old_count,
            self.old_sum + other.old_sum,
            min(firsts) if firsts else None,
            max(lasts) if lasts else None,
        )

    def to_json(self) -> list[Any]:
        return [self.times, self.values, self.old_count, self.old_sum, self.old_first, self.old_last]

    @classmethod
    def from_json(cls, raw: list[Any]) -> Series:
        return cls(raw[0], raw[1], raw[2], raw[3], raw[4], raw[5])


@dataclass
class PersonState:
    attributes: dict[str, tuple[int, Any]] = field(default_factory=dict)  # name → (time, value)
    presence: dict[str, tuple[int, str]] = field(default_factory=dict)  # region → (time, enter|exit|dwell)
    position: tuple[int, float, float] | None = None  # (time, lat, lon)
    series: dict[str, Series] = field(default_factory=dict)  # SeriesSpec.key → Series

    def copy(self) -> PersonState:
        """A copy whose containers can be changed without touching this one (series are copied lazily
        by ``evaluate.apply`` only when a fact touches them)."""
        return PersonState(dict(self.attributes), dict(self.presence), self.position, dict(self.series))

    def merged(self, other: PersonState) -> PersonState:
        """This person's state with a merged-away person's folded in (docs/segments.md, "Merges"):
        latest wins by event time for attributes, presence and position (on equal times this
        state's value stays), series are added up. A new state; neither input is changed."""
        new = self.copy()
        for name, value in other.attributes.items():
            if name not in new.attributes or value[0] > new.attributes[name][0]:
                new.attributes[name] = value
        for region, value in other.presence.items():
            if region not in new.presence or value[0] > new.presence[region][0]:
                new.presence[region] = value
        if other.position is not None and (new.position is None or other.position[0] > new.position[0]):
            new.position = other.position
        for key, series in other.series.items():
            mine = new.series.get(key)
            new.series[key] = series.merged(Series()) if mine is None else mine.merged(series)
        return new

    def to_bytes(self) -> bytes:
        doc = {
            "a": {k: list(v) for k, v in self.attributes.items()},
            "p": {k: list(v) for k, v in self.presence.items()},
            "g": list(self.position) if self.position else None,
            "s": {k: v.to_json() for k, v in self.series.items()},
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> PersonState:
        doc = json.loads(data)
        return cls(
            attributes={k: (v[0], v[1]) for k, v in doc["a"].items()},
            presence={k: (v[0], v[1]) for k, v in doc["p"].items()},
            position=tuple(doc["g"]) if doc["g"] else None,  # type: ignore[arg-type]
            series={k: Series.from_json(v) for k, v in doc["s"].items()},
        )


def latest(current: tuple[int, Any] | None, time_ms: int) -> bool:
    """Latest-wins by event time; on equal times the later-applied fact wins."""
    return current is None or time_ms >= current[0]
