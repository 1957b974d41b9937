"""Small builders for the trigger core's tests: campaign sets from YAML, times, people, events."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

from services.trigger.core import Context, Emit
from services.trigger.definitions import CampaignSet, load_campaigns
from services.trigger.inputs import Device, LocationChange, PersonEvent, PersonView, SegmentChange
from services.trigger.render import Tracking, hmac_signer

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday, 12:00 UTC; noon in Dublin


def at(minutes: float = 0, **delta: float) -> datetime:
    return T0 + timedelta(minutes=minutes, **delta)


def campaigns(yaml_text: str) -> CampaignSet:
    return load_campaigns(textwrap.dedent(yaml_text))


def context(yaml_text: str, tracking: bool = False) -> Context:
    track = Tracking("https://t.example.com", hmac_signer(b"test-key")) if tracking else None
    return Context(campaigns(yaml_text), track)


def person(person_id: str = "p-1", **fields: Any) -> PersonView:
    base: dict[str, Any] = {
        "email": "ann@example.com",
        "email_subscribed": True,
        "phone": "353861234567",
        "devices": (
            Device("dev-a", "ios", "tok-a", push_enabled=True, primary=True),
            Device("dev-b", "android", "tok-b", push_enabled=True),
        ),
        "timezone": "Europe/Dublin",
        "attributes": {"first_name": "Ann"},
    }
    base.update(fields)
    return PersonView(person_id, **base)


def event(
    name: str, when: datetime = T0, event_id: str | None = None, person_id: str = "p-1", **properties: Any
) -> PersonEvent:
    return PersonEvent(
        event_id or f"ev-{name}-{when.isoformat()}", person_id, when, "event", name, properties
    )


def tag(name: str, when: datetime = T0, person_id: str = "p-1") -> PersonEvent:
    return PersonEvent(f"tag-{name}-{when.isoformat()}", person_id, when, "tag", name)


def segment(segment_id: str, change: str, when: datetime = T0, person_id: str = "p-1") -> PersonEvent:
    return PersonEvent(
        f"seg-{segment_id}-{change}-{when.isoformat()}",
        person_id,
        when,
        "segment",
        segment=SegmentChange(segment_id, change),  # type: ignore[arg-type]
    )


def location(
    region: str, transition: str, when: datetime = T0, dwell: float | None = None, person_id: str = "p-1"
) -> PersonEvent:
    return PersonEvent(
        f"loc-{region}-{transition}-{when.isoformat()}",
        person_id,
        when,
        "location",
        location=LocationChange(transition, region, "geofence", dwell),  # type: ignore[arg-type]
    )


def api(name: str, payload: dict[str, Any], when: datetime = T0, person_id: str = "p-1") -> PersonEvent:
    return PersonEvent(f"api-{name}-{when.isoformat()}", person_id, when, "api", name, payload)


def emitted(actions: list[Any]) -> list[dict[str, Any]]:
    return [a.message for a in actions if isinstance(a, Emit)]
