"""The envelope every raw record starts with, read from an HTTP message: ids, times, context.

Segment messages and our own (``/v1/tag``, ``/v1/location``...) share it, so both accept the
same identifier spellings (``userId`` or ``user_id``...). Helpers raise :class:`Invalid` naming
the field; the mapping steps turn it into a :class:`~services.common.steps.Rejection`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

# Identity field -> the spellings accepted in a message (first one present wins).
IDENTITY_SPELLINGS: dict[str, tuple[str, ...]] = {
    "install_id": ("installId", "install_id"),
    "anonymous_id": ("anonymousId", "anonymous_id"),
    "external_user_id": ("userId", "user_id", "external_user_id"),
    "email": ("email",),
    "phone": ("phone",),
}

# Segment context object -> our flat string context map.
CONTEXT_PATHS: dict[str, tuple[str, str | None]] = {
    "app_name": ("app", "name"),
    "app_version": ("app", "version"),
    "app_build": ("app", "build"),
    "os": ("os", "name"),
    "os_version": ("os", "version"),
    "device_manufacturer": ("device", "manufacturer"),
    "device_model": ("device", "model"),
    "device_type": ("device", "type"),
    "ip": ("ip", None),
    "user_agent": ("userAgent", None),
    "locale": ("locale", None),
    "timezone": ("timezone", None),
    "location_city": ("location", "city"),
    "location_country": ("location", "country"),
    "location_latitude": ("location", "latitude"),
    "location_longitude": ("location", "longitude"),
    "campaign_name": ("campaign", "name"),
    "campaign_source": ("campaign", "source"),
    "campaign_medium": ("campaign", "medium"),
    "campaign_term": ("campaign", "term"),
    "campaign_content": ("campaign", "content"),
    "page_url": ("page", "url"),
    "page_path": ("page", "path"),
    "page_referrer": ("page", "referrer"),
    "library_name": ("library", "name"),
    "library_version": ("library", "version"),
}
MOBILE_OS = {"ios": "ios", "iphone os": "ios", "ipados": "ios", "android": "android"}


class Invalid(ValueError):
    """A message field is missing or has the wrong type; the text names the field."""


def parse_time(value: Any, path: str) -> int:
    """ISO-8601 text (no zone means UTC, as Segment's libraries assume) or epoch ms -> epoch ms."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Invalid(f"{path}: expected an ISO-8601 time")
    if isinstance(value, (int, float)):
        return int(value)
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Invalid(f"{path}: {value[:40]!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return round(parsed.timestamp() * 1000)


def event_time(msg: dict[str, Any], sent_at: Any, received_ms: int, path: str) -> int:
    """Segment's clock-skew rule: ``timestamp + (receivedAt - sentAt)``.

    The device clock may be off; ``sentAt`` and ``timestamp`` come from the same clock, so their
    difference is trustworthy and is re-anchored on our clock. Without ``timestamp`` the event
    happened when it arrived; without ``sentAt`` the timestamp is taken as is.
    """
    timestamp = msg.get("timestamp", msg.get("originalTimestamp"))
    if timestamp is None:
        return received_ms
    ts = parse_time(timestamp, f"{path}timestamp")
    sent = msg.get("sentAt", sent_at)
    if sent is None:
        return ts
    return ts + (received_ms - parse_time(sent, f"{path}sentAt"))


def text_or_none(value: Any, path: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Invalid(f"{path}: expected a string")
    return str(value)


def obj(msg: dict[str, Any], field: str, path: str) -> dict[str, Any]:
    value = msg.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"{path}{field}: expected a JSON object")
    return value


def identity(msg: dict[str, Any], path: str, traits: dict[str, Any] | None = None) -> dict[str, str | None]:
    """The record's identity; at least one id is required (ingest would refuse it anyway)."""
    context = obj(msg, "context", path)
    traits = {**obj(context, "traits", f"{path}context."), **(traits or {})}
    out: dict[str, str | None] = {}
    for field, spellings in IDENTITY_SPELLINGS.items():
        value = next((msg[s] for s in spellings if msg.get(s) not in (None, "")), None)
        if value is None and field in ("email", "phone"):
            value = traits.get(field)
        if value is None and field == "install_id":
            value = obj(context, "device", f"{path}context.").get("id")
        out[field] = text_or_none(value, f"{path}{spellings[0]}")
    if not any(out.values()):
        raise Invalid(f"{path}userId: an anonymousId or userId (or another identifier) is required")
    return out


def context_map(context: dict[str, Any], request_ip: str | None) -> dict[str, str]:
    """Segment's nested ``context`` -> our flat string map (see schemas/README.md)."""
    out: dict[str, str] = {}
    for key, (first, second) in CONTEXT_PATHS.items():
        value = context.get(first)
        if second is not None:
            value = value.get(second) if isinstance(value, dict) else None
        if value is not None and value != "" and not isinstance(value, (dict, list)):
            out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    os_name = out.get("os", "").lower()
    platform = MOBILE_OS.get(os_name) or ("web" if "user_agent" in out or "page_url" in out else None)
    if platform:
        out["platform"] = platform
    if "ip" not in out and request_ip:
        out["ip"] = request_ip  # Segment's rule: the connection's address when the SDK sends none
    return out


def envelope(
    msg: dict[str, Any], *, source: str, received_ms: int, sent_at: Any, request_ip: str | None, path: str
) -> dict[str, Any]:
    """The shared head of every raw record (message_id ... context)."""
    context = obj(msg, "context", path)
    app = context.get("app") if isinstance(context.get("app"), dict) else {}
    message_id = text_or_none(msg.get("messageId", msg.get("message_id")), f"{path}messageId")
    backfill = msg.get("backfill", False)
    if not isinstance(backfill, bool):
        raise Invalid(f"{path}backfill: expected true or false")
    return {
        "message_id": message_id or str(uuid.uuid4()),
        "event_time": event_time(msg, sent_at, received_ms, path),
        "received_time": received_ms,
        "source": source,
        "app_id": text_or_none(
            msg.get("appId", msg.get("app_id")) or app.get("namespace") or app.get("name"), f"{path}appId"
        ),
        "backfill": backfill,
        "identity": identity(msg, path),
        "context": context_map(context, request_ip),
    }
