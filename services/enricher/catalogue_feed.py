"""The geofence catalogue in use: the file's entries overlaid by the ``geofences`` topic's.

The topic is compacted, one record per entry keyed ``geofence:<id>`` or ``beacon:<id>`` (value:
the entry's JSON, as in the file; a tombstone removes it), so the catalogue can change without a
restart: ``tagstream geofences publish FILE`` writes it. Every instance follows the whole topic
(``services/common/follow.py``) and the person stage reads :meth:`CatalogueFeed.current` per
record. An entry of the topic replaces the file's entry of the same kind and id; removing it
brings the file's back. A record that does not parse is skipped with a warning and
``enricher_geofence_records_total{result="refused"}``; the entry it would have replaced stays.

A fence removed from the catalogue gives no more transitions (not even an exit for devices
inside it): a visit is kept per fence id and only fences in the catalogue are tracked.
"""

from __future__ import annotations

import json
import threading

from pydantic import ValidationError

from services.common.logs import get_logger
from services.enricher import metrics
from services.enricher.geofences import (
    BeaconEntry,
    Catalogue,
    CatalogueError,
    CatalogueFile,
    GeofenceEntry,
    build_catalogue,
    describe,
)

log = get_logger("enricher")
KINDS = {"geofence": GeofenceEntry, "beacon": BeaconEntry}


def record_key(kind: str, entry_id: str) -> bytes:
    return f"{kind}:{entry_id}".encode()


def parse_record(key: bytes, value: bytes | None) -> tuple[str, str, GeofenceEntry | BeaconEntry | None]:
    """(kind, id, entry) of one topic record; entry None for a tombstone."""
    kind, _, entry_id = key.decode(errors="replace").partition(":")
    if kind not in KINDS or not entry_id:
        raise CatalogueError(f"key {key[:80]!r}: expected geofence:<id> or beacon:<id>")
    if value is None:
        return kind, entry_id, None
    try:
        entry = KINDS[kind].model_validate(json.loads(value))
    except json.JSONDecodeError as exc:
        raise CatalogueError(f"{kind} {entry_id!r}: not JSON: {exc}") from None
    except ValidationError as exc:
        raise CatalogueError(f"{kind} {entry_id!r}: {describe(exc)}") from None
    if entry.id != entry_id:
        raise CatalogueError(f"{kind} {entry_id!r}: the value's id is {entry.id!r}")
    return kind, entry_id, entry


class CatalogueFeed:
    def __init__(self, base: CatalogueFile) -> None:
        self._base = base
        self._lock = threading.Lock()  # records arrive on the follower's thread
        self._fences: dict[str, GeofenceEntry] = {}  # the topic's entries
        self._beacons: dict[str, BeaconEntry] = {}
        self._current: Catalogue | None = None  # None: to rebuild on the next read

    def apply(self, key: bytes, value: bytes | None) -> None:
        """One record of the topic (the follower's callback)."""
        try:
            kind, entry_id, entry = parse_record(key, value)
        except CatalogueError as exc:
            metrics.GEOFENCE_RECORDS.labels("refused").inc()
            log.warning("geofence record refused", extra={"reason": str(exc)})
            return
        with self._lock:
            if isinstance(entry, GeofenceEntry):
                self._fences[entry_id] = entry
            elif isinstance(entry, BeaconEntry):
                self._beacons[entry_id] = entry
            else:  # a tombstone
                (self._fences if kind == "geofence" else self._beacons).pop(entry_id, None)
            self._current = None
        metrics.GEOFENCE_RECORDS.labels("applied").inc()

    def current(self) -> Catalogue:
        """The catalogue as of the records applied so far (rebuilt once per change)."""
        with self._lock:
            if self._current is None:
                fences = {g.id: g for g in self._base.geofences} | self._fences
                beacons = {b.id: b for b in self._base.beacons} | self._beacons
                self._current = build_catalogue(fences.values(), beacons.values())
                metrics.GEOFENCES.labels("geofence").set(len(fences))
                metrics.GEOFENCES.labels("beacon").set(len(beacons))
            return self._current
