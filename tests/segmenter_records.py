"""Builders of ``enriched`` envelopes (what the enricher writes) for segmenter tests."""

from __future__ import annotations

from typing import Any

from services.common.serde import Serde
from services.enricher import profile
from services.segmenter.facts import Fact
from tests import enricher_records as rec

SERDE = Serde()
RECORD_TYPE = {
    "event": "event",
    "app_launch": "event",
    "tag": "tag_hit",
    "profile_update": "profile_update",
    "delivery_receipt": "delivery_receipt",
    "location": "location",
}


def envelope(
    kind: str, person: str, t: int, record: dict[str, Any] | None = None, mid: str = "m", **details: str
) -> dict[str, Any]:
    record_type = RECORD_TYPE.get(kind) if record is not None else None
    return {
        "message_id": mid,
        "person_id": person,
        "device_id": "install_id:d1",
        "event_time": t,
        "kind": kind,
        "record_type": record_type,
        "original": SERDE.encode(record_type, record) if record_type and record else None,
        "details": details,
    }


def event(person: str, t: int, name: str, props: dict[str, Any] | None = None, mid: str = "e") -> dict:
    return envelope("event", person, t, rec.event(mid, t, "custom", name, props, install_id="d1"), mid)


def tag(person: str, t: int, name: str, value: str | None = None, mid: str = "t") -> dict[str, Any]:
    return envelope("tag", person, t, rec.tag(mid, t, name, value, install_id="d1"), mid)


def update(person: str, t: int, attrs: dict[str, tuple[str, str | None]], mid: str = "u") -> dict:
    """``attrs``: name → (type, canonical text or None)."""
    record = rec.update(mid, t, {}, install_id="d1")
    record["attributes"] = [
        {"name": k, "type": kind, "value": v, "scope": "person"} for k, (kind, v) in attrs.items()
    ]
    return envelope("profile_update", person, t, record, mid)


def receipt(
    person: str, t: int, status: str, channel: str = "email", campaign: str | None = None, mid: str = "r"
) -> dict[str, Any]:
    record = rec.receipt(mid, t, status, channel=channel, install_id="d1")
    record["campaign_id"] = campaign
    return envelope("delivery_receipt", person, t, record, mid)


def gps(person: str, t: int, lat: float, lon: float, mid: str = "g") -> dict[str, Any]:
    return envelope("location", person, t, rec.gps(mid, t, lat, lon, install_id="d1"), mid)


def encode(env: dict[str, Any]) -> bytes:
    return SERDE.encode("enriched_event", env)


# -- a segmenter Fact as what the enricher writes (tests/unit/segmenter/history.py → `enriched`) --
REGION_KINDS = {"enter": "geofence_entered", "exit": "geofence_exited", "dwell": "geofence_dwelled"}


def attribute_text(name: str, value: Any) -> tuple[str, str | None]:
    """(declared type, canonical text) of a fact's attribute value, as ingest would write it. Dates
    are declared ``date`` whatever their text (``n/a`` stays text on both sides)."""
    if value is None:
        return "string", None
    if isinstance(value, bool):
        return "boolean", "true" if value else "false"
    if isinstance(value, int | float):
        return "number", repr(value)
    return ("date" if name.endswith("_date") else "string"), value


def from_fact(fact: Fact, mid: str) -> list[dict[str, Any]]:
    """The enriched envelopes that carry ``fact``: one, or for a region transition reported with
    coordinates two (the device's ``location`` record, which states no fact, and the transition)."""
    p, t = fact.person_id, fact.time_ms
    if fact.kind == "attribute":
        return [update(p, t, {fact.name: attribute_text(fact.name, fact.value)}, mid=mid)]
    if fact.kind == "tag":
        return [tag(p, t, fact.name, fact.value, mid=mid)]
    if fact.kind == "event":
        return [event(p, t, fact.name, dict(fact.properties), mid=mid)]
    if fact.kind == "message":
        return [receipt(p, t, fact.name, fact.channel or "email", fact.campaign, mid=mid)]
    if fact.kind == "session":
        return [envelope("session_start", p, t, mid=mid, session_id=f"{p}:{mid}")]
    if fact.name == "gps":
        return [gps(p, t, fact.lat or 0.0, fact.lon or 0.0, mid=mid)]
    out = []
    if fact.lat is not None and fact.lon is not None:  # device-reported: its record, then the transition
        record = rec.gps(mid, t, fact.lat, fact.lon, install_id="d1")
        record.update(kind=fact.name, region_id=fact.region, region_kind="geofence")
        out.append(envelope("location", p, t, record, mid))
    details = {"region_id": fact.region or "", "region_kind": "geofence", "reported_by": "device"}
    out.append(envelope(REGION_KINDS[fact.name], p, t, mid=f"{mid}:{fact.name}", **details))
    return out


def profiles_after(profiles: dict[str, dict[str, Any]], facts: list[Fact]) -> list[dict[str, Any]]:
    """Apply the attribute facts to ``profiles`` (person → the enricher's profile state, updated in
    place, latest wins by event time) and return the ``profile`` records of the persons changed."""
    changed = set()
    for f in facts:
        if f.kind == "attribute":
            p = profiles.setdefault(f.person_id, profile.empty())
            profile.set_attribute(p, f.name, *attribute_text(f.name, f.value), "person", f.time_ms)
            profile.seen(p, f.time_ms)
            changed.add(f.person_id)
    return [profile.to_record(profiles[person], person) for person in sorted(changed)]


def profiles_merged(profiles: dict[str, dict[str, Any]], merged: str, survivor: str) -> list[dict[str, Any]]:
    """The enricher's profiles after ``merged`` is merged into ``survivor`` (its person stage:
    the survivor's profile absorbs the other's, latest wins; the other is marked merged)."""
    if merged not in profiles:
        return []
    other = profiles[merged]
    mine = profiles.setdefault(survivor, profile.empty())
    profile.merge(mine, other)
    other["merged_into"] = survivor
    return [profile.to_record(other, merged), profile.to_record(mine, survivor)]
