"""The ``enriched`` topic → person-attributed rows in several tables, by the envelope's ``kind``.

An envelope that carries its input record (``original``, Avro bytes as ingest wrote them) becomes
exactly the row the ``*.valid`` route would make of that record (rows.py converters), with the
envelope's ``person_id`` filled in: one row per enriched record, so ``count() ==
uniqExact(message_id)`` holds per table. Derived envelopes (no ``original``) go to their own
tables: ``session_start``/``session_end`` → ``sessions``, ``geofence_*`` → ``geofence_transitions``,
``merge`` → ``identity_merges``. An unknown kind is a :class:`ConversionError` (→ dead letter), so
a new enricher kind is noticed, not silently dropped.

Which topics the loader reads (:func:`routes_for`): ``enriched`` by default; ``valid`` for a
pipeline without the enricher. Never both: the same input record would load twice.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from services.common.serde import SerdeError
from services.common.topics import ENRICHED
from services.loader.rows import (
    COMMON_ROUTES,
    PERSON_INDEX,
    ROUTES,
    ConversionError,
    Decode,
    FanOutRoute,
    Route,
    Row,
    event_row,
    location_row,
    message_event_row,
    profile_update_row,
    tag_row,
)

SOURCES = ("enriched", "valid")
# kind → (record type of `original`, table, converter of the original record)
ORIGINAL: dict[str, tuple[str, str, Callable[[dict[str, Any]], list[Row]]]] = {
    "tag": ("tag_hit", "tags", tag_row),
    "event": ("event", "events", event_row),
    "app_launch": ("event", "events", event_row),  # an event the enricher counted as a new launch
    "location": ("location", "locations", location_row),
    "delivery_receipt": ("delivery_receipt", "message_events", message_event_row),
    "profile_update": ("profile_update", "profile_updates", profile_update_row),
}
SESSION_KINDS = {"session_start": "start", "session_end": "end"}
GEOFENCE_KINDS = {"geofence_entered": "entered", "geofence_exited": "exited", "geofence_dwelled": "dwelled"}


def enriched_rows(record: dict[str, Any], decode: Decode) -> list[tuple[str, Row]]:
    kind, person = record["kind"], record["person_id"]
    details = record.get("details") or {}
    if kind in ORIGINAL:
        record_type, table, convert = ORIGINAL[kind]
        if not record.get("original"):
            raise ConversionError(f"missing field original ({kind})")
        try:
            found, original = decode(record["original"])
        except SerdeError as exc:
            raise ConversionError(f"original undecodable: {exc}") from None
        if found != record_type:
            raise ConversionError(f"original is a {found}, expected {record_type} for kind {kind}")
        return [(table, _with_person(row, person)) for row in convert(original)]
    if kind in SESSION_KINDS:
        duration = details.get("duration_ms")
        row = (
            *(record["message_id"], person, record.get("device_id"), record["event_time"]),
            *(SESSION_KINDS[kind], details.get("session_id") or "", int(duration) if duration else None),
        )
        return [("sessions", row)]
    if kind in GEOFENCE_KINDS:
        row = (
            *(record["message_id"], person, record.get("device_id"), record["event_time"]),
            *(GEOFENCE_KINDS[kind], details["region_id"], details.get("region_kind") or ""),
            details.get("reported_by") or "",
        )
        return [("geofence_transitions", row)]
    if kind == "merge":
        return [("identity_merges", (details["merged_from"], person, record["event_time"]))]
    raise ConversionError(f"unknown enriched kind {kind!r}")


def native_original(record: dict[str, Any], native_tables: Collection[str]) -> tuple[str, str] | None:
    """``(table, record type)`` when ClickHouse can convert this envelope's original itself (the
    loader's fast path, native.py); None for derived kinds, tables without SQL, no original."""
    target = ORIGINAL.get(record["kind"])
    if target is None or target[1] not in native_tables or not record.get("original"):
        return None
    return target[1], target[0]


def _with_person(row: Row, person: str) -> Row:
    return (*row[:PERSON_INDEX], person, *row[PERSON_INDEX + 1 :])


ENRICHED_ROUTE = FanOutRoute(
    ENRICHED,
    (*sorted({t for _, t, _ in ORIGINAL.values()}), "sessions", "geofence_transitions", "identity_merges"),
    enriched_rows,
)


def routes_for(source: str) -> tuple[Route | FanOutRoute, ...]:
    """``enriched`` (person-attributed, the default) or ``valid`` (ingest's output, no enricher)."""
    if source == "valid":
        return ROUTES
    if source == "enriched":
        return (ENRICHED_ROUTE, *COMMON_ROUTES)
    raise ValueError(f"unknown loader source {source!r}; one of {', '.join(SOURCES)}")
