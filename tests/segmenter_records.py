"""Builders of ``enriched`` envelopes (what the enricher writes) for segmenter tests."""

from __future__ import annotations

from typing import Any

from services.common.serde import Serde
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


def receipt(person: str, t: int, status: str, channel: str = "email", campaign: str | None = None) -> dict:
    record = rec.receipt("r", t, status, channel=channel, install_id="d1")
    record["campaign_id"] = campaign
    return envelope("delivery_receipt", person, t, record, "r")


def gps(person: str, t: int, lat: float, lon: float) -> dict[str, Any]:
    return envelope("location", person, t, rec.gps("g", t, lat, lon, install_id="d1"), "g")


def encode(env: dict[str, Any]) -> bytes:
    return SERDE.encode("enriched_event", env)
