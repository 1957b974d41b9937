"""Geofences: the catalogue (circles, polygons, iBeacons) and GPS points -> transitions. Pure.

Catalogue file (JSON)::

    {"geofences": [{"id": "store-1", "latitude": 53.35, "longitude": -6.26, "radius_m": 100},
                   {"id": "park", "polygon": [[53.0, -6.0], [53.0, -6.1], [53.1, -6.1]]}],
     "beacons": [{"id": "door", "uuid": "f7826da6-...", "major": 1, "minor": 2}]}

Hysteresis: a point enters at the edge but exits only ``hysteresis_m`` beyond it, so GPS jitter at
the edge does not flap. ``dwelled`` fires once per visit, on the first point at least ``dwell_ms``
after entering.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def load_catalogue(path: Path | None) -> Catalogue:
    if path is None:
        return Catalogue()
    raw = json.loads(Path(path).read_text())
    fences = tuple(
        Geofence(
            id=str(g["id"]),
            latitude=float(g.get("latitude", 0.0)),
            longitude=float(g.get("longitude", 0.0)),
            radius_m=float(g.get("radius_m", 0.0)),
            polygon=tuple((float(a), float(b)) for a, b in g.get("polygon", [])),
        )
        for g in raw.get("geofences", [])
    )
    beacons = {f"{b['uuid']}:{b['major']}:{b['minor']}".lower(): str(b["id"]) for b in raw.get("beacons", [])}
    return Catalogue(fences, beacons)


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
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """One GPS point of one device: new visits ``{fence: {"since", "dwelled"}}`` and transitions."""
    visits = dict(visits)
    transitions: list[tuple[str, str]] = []
    for fence in catalogue.geofences:
        outside = fence.distance_outside_m(lat, lon)
        visit = visits.get(fence.id)
        if visit is None and outside <= 0:
            visits[fence.id] = visit = {"since": time_ms, "dwelled": False}
            transitions.append(("geofence_entered", fence.id))
        elif visit is not None and outside > hysteresis_m:
            del visits[fence.id]
            transitions.append(("geofence_exited", fence.id))
            continue
        if visit is not None and not visit["dwelled"] and time_ms - visit["since"] >= dwell_ms:
            visits[fence.id] = {**visit, "dwelled": True}
            transitions.append(("geofence_dwelled", fence.id))
    return visits, transitions


DEVICE_REGION_KINDS = {"enter": "geofence_entered", "exit": "geofence_exited", "dwell": "geofence_dwelled"}
