"""Our own JSON shapes: ``/v1/tag``, ``/v1/location``, ``/v1/region`` and ``/v1/receipts``.

Each message carries the shared envelope (identifiers, ``messageId``, ``timestamp``, ``sentAt``,
``context``, ``backfill``; see :mod:`envelope`) plus its own fields, documented in README.md.
Pure functions: a message in, ``(topic, record)`` or a :class:`Rejection` out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.common.steps import Rejection
from services.common.topics import DELIVERY_RECEIPTS, LOCATIONS, TAGS, TopicSpec
from services.ingest.collector.envelope import Invalid, envelope, text_or_none

Mapped = tuple[TopicSpec, dict[str, Any]]

# What ingest accepts per channel (schemas/README.md, "Delivery receipt statuses").
RECEIPT_STATUSES: dict[str, frozenset[str]] = {
    "email": frozenset(
        [
            "sent",
            "delivered",
            "undelivered",
            "opened",
            "read",
            "clicked",
            "link_clicked",
            "soft_bounced",
            "hard_bounced",
            "complained",
            "unsubscribed",
            "confirmed",
        ]
    ),
    "sms": frozenset({"sent", "delivered", "undelivered", "clicked"}),
    "push": frozenset({"sent", "delivered", "opened", "clicked", "bounced"}),
    "webpush": frozenset({"sent", "delivered", "opened", "clicked", "bounced"}),
    "inapp": frozenset({"viewed", "clicked"}),
    "app": frozenset({"uninstalled"}),
}


def _required_text(msg: dict[str, Any], field: str, path: str) -> str:
    value = text_or_none(msg.get(field), f"{path}{field}")
    if value is None:
        raise Invalid(f"{path}{field}: required")
    return value


def _number(msg: dict[str, Any], field: str, path: str, low: float, high: float) -> float | None:
    value = msg.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise Invalid(f"{path}{field}: expected a number between {low:g} and {high:g}")
    return float(value)


def _tag(msg: dict[str, Any], head: dict[str, Any], path: str) -> Mapped:
    value = msg.get("value")
    text = None if value is None else (value if isinstance(value, str) else str(value).lower())
    return TAGS, {**head, "name": _required_text(msg, "name", path), "value": text}


def _location(msg: dict[str, Any], head: dict[str, Any], path: str) -> Mapped:
    latitude = _number(msg, "latitude", path, -90, 90)
    longitude = _number(msg, "longitude", path, -180, 180)
    if latitude is None or longitude is None:
        raise Invalid(f"{path}{'latitude' if latitude is None else 'longitude'}: required")
    return LOCATIONS, {
        **head,
        "kind": "gps",
        "latitude": latitude,
        "longitude": longitude,
        "accuracy_m": _number(msg, "accuracy", path, 0, 1e7),
        "region_id": None,
        "region_kind": None,
    }


def _region(msg: dict[str, Any], head: dict[str, Any], path: str) -> Mapped:
    transition = msg.get("transition", msg.get("kind"))
    if transition not in ("enter", "exit", "dwell"):
        raise Invalid(f"{path}transition: required, one of enter, exit, dwell")
    region_kind = msg.get("regionKind", msg.get("region_kind", "geofence"))
    if region_kind not in ("geofence", "ibeacon"):
        raise Invalid(f"{path}regionKind: one of geofence, ibeacon")
    return LOCATIONS, {
        **head,
        "kind": transition,
        "latitude": _number(msg, "latitude", path, -90, 90),
        "longitude": _number(msg, "longitude", path, -180, 180),
        "accuracy_m": _number(msg, "accuracy", path, 0, 1e7),
        "region_id": _required_text(msg, "regionId", path),
        "region_kind": region_kind,
    }


def _receipt(msg: dict[str, Any], head: dict[str, Any], path: str) -> Mapped:
    channel = msg.get("channel")
    if channel not in RECEIPT_STATUSES:
        raise Invalid(f"{path}channel: required, one of {', '.join(RECEIPT_STATUSES)}")
    status = msg.get("status")
    if status not in RECEIPT_STATUSES[channel]:
        known = ", ".join(sorted(RECEIPT_STATUSES[channel]))
        raise Invalid(f"{path}status: {str(status)[:40]!r} is not a {channel} status ({known})")
    optional = {
        "campaign_id": "campaignId",
        "send_id": "sendId",
        "link_id": "linkId",
        "link_url": "linkUrl",
        "provider": "provider",
        "reason": "reason",
    }
    fields = {ours: text_or_none(msg.get(theirs), f"{path}{theirs}") for ours, theirs in optional.items()}
    return DELIVERY_RECEIPTS, {**head, "channel": channel, "status": status, **fields}


MAPPERS: dict[str, Callable[[dict[str, Any], dict[str, Any], str], Mapped]] = {
    "tag": _tag,
    "location": _location,
    "region": _region,
    "receipts": _receipt,
}


def map_native(
    kind: str, msg: Any, *, source: str, received_ms: int, sent_at: Any, request_ip: str | None, path: str
) -> Mapped | Rejection:
    if not isinstance(msg, dict):
        return Rejection("schema_violation", f"{path or 'body'}: expected a JSON object", "validate")
    try:
        head = envelope(
            msg, source=source, received_ms=received_ms, sent_at=sent_at, request_ip=request_ip, path=path
        )
        return MAPPERS[kind](msg, head, path)
    except Invalid as exc:
        return Rejection("schema_violation", str(exc), "validate")
