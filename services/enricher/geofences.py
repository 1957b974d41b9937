"""Geofences: the catalogue (circles, polygons, iBeacons) and GPS points -> transitions. Pure.

Catalogue file (JSON)::

    {"geofences": [{"id": "store-1", "latitude": 53.35, "longitude": -6.26, "radius_m": 100},
                   {"id": "park", "polygon": [[53.0, -6.0], [53.0, -6.1], [53.1, -6.1]]}],
     "beacons": [{"id": "door", "uuid": "f7826da6-...", "major": 1, "minor": 2}]}

The same entries can come from the compacted ``geofences`` topic, one record per entry, keyed
``geofence:<id>`` or ``beacon:<id>``, the entry's JSON as value (a tombstone removes it); see
``catalogue_feed.py``. Every entry is checked (a circle or a polygon of 3+ points, coordinates
in range, beacon major/minor 0..65535, no unknown field); an error names the entry.

Hysteresis: a point enters at the edge but exits only ``hysteresis_m`` beyond it, so GPS jitter at
the edge does not flap. ``dwelled`` fires once per visit, on the first point at least ``dwell_ms``
after entering.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

EARTH_RADIUS_M = 6_371_000.0


@dataclass(frozen=True)
class Geofence:
    id: str
    latitude: float = 0.0
    longitude: float = 0.0
    radius_m: float = 0.0
    polygon: tuple[tuple[float, float], ...] = ()

    def distance_outside_m(self, lat: float, lon: float) -> float:
        """How far outside the fence the point is (<= 0 means inside)."""
        if self.polygon:
            if _in_polygon(self.polygon, lat, lon):
                return 0.0
            return min(distance_m(lat, lon, vlat, vlon) for vlat, vlon in self.polygon)
        return distance_m(lat, lon, self.latitude, self.longitude) - self.radius_m


@dataclass(frozen=True)
class Catalogue:
    geofences: tuple[Geofence, ...] = ()
    beacons: dict[str, str] | None = None  # "uuid:major:minor" (lowercase) -> beacon id

    def beacon_id(self, region_id: str) -> str:
        return (self.beacons or {}).get(region_id.lower(), region_id)


class CatalogueError(ValueError):
    """A catalogue entry (or file) that cannot be used; the message names the entry."""


class GeofenceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    name: str | None = None
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    radius_m: float | None = Field(default=None, gt=0)
    polygon: list[tuple[float, float]] | None = Field(default=None, min_length=3)

    @model_validator(mode="after")
    def _one_shape(self) -> GeofenceEntry:
        circle = (self.latitude, self.longitude, self.radius_m)
        if self.polygon is not None:
            if any(v is not None for v in circle):
                raise ValueError("a polygon takes no latitude/longitude/radius_m")
        elif any(v is None for v in circle):
            raise ValueError("a circle needs latitude, longitude and radius_m (or give a polygon)")
        return self

    def fence(self) -> Geofence:
        if self.polygon is not None:
            return Geofence(self.id, polygon=tuple((float(a), float(b)) for a, b in self.polygon))
        assert self.latitude is not None and self.longitude is not None and self.radius_m is not None
        return Geofence(self.id, self.latitude, self.longitude, self.radius_m)


class BeaconEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    name: str | None = None
    uuid: str = Field(min_length=1)
    major: int = Field(ge=0, le=65535)
    minor: int = Field(ge=0, le=65535)

    @property
    def region(self) -> str:
        """How a device reports it (lowercase ``uuid:major:minor``)."""
        return f"{self.uuid}:{self.major}:{self.minor}".lower()


class CatalogueFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    geofences: list[GeofenceEntry] = []
    beacons: list[BeaconEntry] = []

    @model_validator(mode="after")
    def _unique_ids(self) -> CatalogueFile:
        for kind, entries in (("geofence", self.geofences), ("beacon", self.beacons)):
            ids = [e.id for e in entries]
            twice = sorted({i for i in ids if ids.count(i) > 1})
            if twice:
                raise ValueError(f"{kind} ids given twice: {', '.join(twice)}")
        return self


def build_catalogue(geofences: Iterable[GeofenceEntry], beacons: Iterable[BeaconEntry]) -> Catalogue:
    return Catalogue(tuple(g.fence() for g in geofences), {b.region: b.id for b in beacons})


def read_catalogue_file(path: Path) -> CatalogueFile:
    """The file's entries, checked; :class:`CatalogueError` names the file and the entry."""
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise CatalogueError(f"{path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise CatalogueError(f"{path}: not JSON: {exc}") from None
    try:
        return CatalogueFile.model_validate(raw)
    except ValidationError as exc:
        raise CatalogueError(f"{path}: {describe(exc)}") from None


def load_catalogue(path: Path | None) -> Catalogue:
    if path is None:
        return Catalogue()
    file = read_catalogue_file(path)
    return build_catalogue(file.geofences, file.beacons)


def describe(exc: ValidationError) -> str:
    """Pydantic's errors as ``geofences[2].radius_m: Input should be greater than 0; ...``."""
    parts = []
    for error in exc.errors():
        where = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in error["loc"]).lstrip(".")
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(parts)


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def _in_polygon(polygon: tuple[tuple[float, float], ...], lat: float, lon: float) -> bool:
    # Ray casting in lat/lon: fine for fences far smaller than a hemisphere.
    inside = False
    j = len(polygon) - 1
    for i, (yi, xi) in enumerate(polygon):
        yj, xj = polygon[j]
        if (yi > lat) != (yj > lat) and lon < (xj - xi) * (lat - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def track(
    visits: dict[str, Any],
    lat: float,
    lon: float,
    time_ms: int,
    catalogue: Catalogue,
    dwell_ms: int,
    hysteresis_m: float,
    now_ms: int,
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """One GPS point of one device: new visits ``{fence: {"since", "dwelled", "due"}}`` and
    transitions. ``due`` is when the clock (``now_ms``, processing time) says the visit dwelled if
    no point says so first (:func:`dwells_due`): a device that stays put may stop reporting."""
    visits = dict(visits)
    transitions: list[tuple[str, str]] = []
    for fence in catalogue.geofences:
        outside = fence.distance_outside_m(lat, lon)
        visit = visits.get(fence.id)
        if visit is None and outside <= 0:
            visits[fence.id] = visit = {"since": time_ms, "dwelled": False, "due": now_ms + dwell_ms}
            transitions.append(("geofence_entered", fence.id))
        elif visit is not None and outside > hysteresis_m:
            del visits[fence.id]
            transitions.append(("geofence_exited", fence.id))
            continue
        if visit is not None and not visit["dwelled"] and time_ms - visit["since"] >= dwell_ms:
            visits[fence.id] = {**visit, "dwelled": True, "due": None}
            transitions.append(("geofence_dwelled", fence.id))
    return visits, transitions


def dwell_due(visits: dict[str, Any]) -> int | None:
    """The earliest time the clock makes one of these visits dwell (None: none will)."""
    dues = [v["due"] for v in visits.values() if not v["dwelled"] and v.get("due") is not None]
    return min(dues, default=None)


def dwells_due(visits: dict[str, Any], now_ms: int) -> tuple[dict[str, Any], list[str]]:
    """The timer: visits still open (no exit seen) whose dwell time passed by the clock dwell now."""
    visits = dict(visits)
    fences = []
    for fence_id, visit in sorted(visits.items()):
        if not visit["dwelled"] and visit.get("due") is not None and visit["due"] <= now_ms:
            visits[fence_id] = {**visit, "dwelled": True, "due": None}
            fences.append(fence_id)
    return visits, fences


DEVICE_REGION_KINDS = {"enter": "geofence_entered", "exit": "geofence_exited", "dwell": "geofence_dwelled"}
