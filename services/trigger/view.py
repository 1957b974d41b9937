"""From the enricher's ``profile`` record and the segment changes to the core's :class:`PersonView`.

The trigger keeps, per person, the fields of the latest profile it needs (:func:`from_profile`,
JSON-able, stored in the ``persons`` table) and the segments the segmenter reported
(:func:`apply_segment`). Rules the profile record does not spell out, decided here:

- email subscription: ``email`` (or ``all``) in the profile's ``subscriptions``, or a boolean
  attribute ``subscribed.email`` (or ``email_subscribed``) that is true;
- unsubscribed lists/channels: boolean attributes ``subscribed.<x>`` false or ``unsubscribed.<x>``
  true;
- devices: the profile's installed devices (``install_id:<id>``); push is enabled when the
  device has a push token; the most recently seen device with a token is the primary one;
- timezone: the person attribute ``timezone``; phone: ``phone`` or attribute ``phone_number``.
"""

from __future__ import annotations

from typing import Any

from services.trigger.inputs import Device, PersonView


def _typed(kind: str, value: str | None) -> Any:
    if value is None or kind == "string" or kind == "date":
        return value
    if kind == "boolean":
        return value.lower() == "true"
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value else number


def from_profile(record: dict[str, Any]) -> dict[str, Any]:
    """What the trigger keeps of one ``profile`` record."""
    attrs = {
        a["name"]: _typed(a["type"], a["value"])
        for a in record.get("attributes") or []
        if a["scope"] == "person" and a["value"] is not None
    }
    subscriptions = set(record.get("subscriptions") or [])
    email_subscribed = bool(
        subscriptions & {"email", "all"}
        or attrs.get("subscribed.email") is True
        or attrs.get("email_subscribed") is True
    )
    unsubscribed = sorted(
        {k.split(".", 1)[1] for k, v in attrs.items() if k.startswith("subscribed.") and v is False}
        | {k.split(".", 1)[1] for k, v in attrs.items() if k.startswith("unsubscribed.") and v is True}
    )
    devices = [
        d
        for d in record.get("devices") or []
        if not d.get("uninstalled") and d["device_id"].startswith("install_id:")
    ]  # most recently seen last
    with_token = [d["device_id"] for d in devices if d.get("push_token")]
    primary = with_token[-1] if with_token else None
    return {
        "external_user_id": record.get("external_user_id"),
        "email": record.get("email") or attrs.get("email"),
        "email_subscribed": email_subscribed,
        "phone": record.get("phone") or attrs.get("phone_number"),
        "timezone": attrs.get("timezone"),
        "attributes": {k: v for k, v in attrs.items() if isinstance(v, str | int | float | bool)},
        "unsubscribed": unsubscribed,
        "devices": [
            {
                "install_id": d["device_id"].removeprefix("install_id:"),
                "platform": (d.get("platform") or "").lower(),
                "push_token": d.get("push_token"),
                "primary": d["device_id"] == primary,
            }
            for d in devices
        ],
    }


def apply_segment(segments: dict[str, list[Any]], segment_id: str, change: str, time_ms: int) -> bool:
    """Record a membership change unless a later one is known; returns whether it was taken."""
    kept = segments.get(segment_id)
    if kept is not None and kept[1] > time_ms:
        return False
    segments[segment_id] = [change, time_ms]
    return True


def person_view(person_id: str, stored: dict[str, Any] | None) -> PersonView:
    """The core's view of a person from the ``persons`` table entry (None: nothing known yet)."""
    stored = stored or {}
    profile = stored.get("profile") or {}
    segments = frozenset(
        s for s, (change, _) in (stored.get("segments") or {}).items() if change == "entered"
    )
    devices = tuple(
        Device(d["install_id"], d["platform"], d["push_token"], bool(d["push_token"]), d["primary"])
        for d in profile.get("devices") or []
    )
    identities = {"external_user_id": profile.get("external_user_id")}
    primary = next((d.install_id for d in devices if d.primary), devices[-1].install_id if devices else None)
    identities["install_id"] = primary
    return PersonView(
        person_id,
        identities={k: v for k, v in identities.items() if v},
        email=profile.get("email"),
        email_subscribed=bool(profile.get("email_subscribed")),
        phone=profile.get("phone"),
        devices=devices,
        timezone=profile.get("timezone"),
        attributes=dict(profile.get("attributes") or {}),
        segments=segments,
        unsubscribed=frozenset(profile.get("unsubscribed") or ()),
    )
