"""Segment tracking spec messages -> tagstream raw records.

identify -> ``profile_update`` (traits as typed attributes, device from context);
track/page/screen -> ``event``; group -> ``event`` of kind ``group``; alias -> ``profile_update``
with action ``alias``. ``messageId`` becomes ``message_id`` unchanged. Every function is pure:
a message in, ``(topic, record)`` or a :class:`Rejection` out.
"""

from __future__ import annotations

import json
from typing import Any

from services.common.steps import Rejection
from services.common.topics import EVENTS, PROFILE_UPDATES, TopicSpec
from services.ingest.collector.attributes import attributes_from
from services.ingest.collector.envelope import Invalid, envelope, obj, text_or_none

SEGMENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")
# Segment's semantic events with a standard kind of ours; every other track is "custom".
STANDARD_EVENTS = {
    "Application Installed": "install",
    "Application Opened": "app_launch",
    "Application Backgrounded": "app_close",
    "Application Uninstalled": "uninstall",
    "Order Completed": "purchase",
}
Mapped = tuple[TopicSpec, dict[str, Any]]


def _json_text(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _event(head: dict[str, Any], name: str, kind: str, properties: dict[str, Any]) -> Mapped:
    return EVENTS, {**head, "name": name, "kind": kind, "properties": _json_text(properties)}


def _device(context: dict[str, Any], platform: str | None) -> dict[str, Any] | None:
    device = context.get("device") if isinstance(context.get("device"), dict) else {}
    os_ = context.get("os") if isinstance(context.get("os"), dict) else {}
    app = context.get("app") if isinstance(context.get("app"), dict) else {}
    fields = {
        "platform": platform,
        "os_version": text_or_none(os_.get("version"), "context.os.version"),
        "app_version": text_or_none(app.get("version"), "context.app.version"),
        "model": text_or_none(device.get("model"), "context.device.model"),
        "push_token": text_or_none(device.get("token"), "context.device.token"),
        "push_enabled": None,
    }
    return fields if any(fields.values()) else None


def _map(kind: str, msg: dict[str, Any], head: dict[str, Any], path: str) -> Mapped:
    properties = obj(msg, "properties", path)
    if kind == "track":
        name = msg.get("event")
        if not isinstance(name, str) or not name.strip():
            raise Invalid(f"{path}event: required, a non-empty string")
        return _event(head, name, STANDARD_EVENTS.get(name, "custom"), properties)
    if kind in ("page", "screen"):
        name = text_or_none(msg.get("name"), f"{path}name")
        category = text_or_none(msg.get("category"), f"{path}category")
        extra = {k: v for k, v in (("name", name), ("category", category)) if v and k not in properties}
        return _event(head, name or kind, kind, {**properties, **extra})
    if kind == "group":
        group_id = text_or_none(msg.get("groupId"), f"{path}groupId")
        if group_id is None:
            raise Invalid(f"{path}groupId: required for group")
        return _event(head, "group", "group", {"group_id": group_id, "traits": obj(msg, "traits", path)})
    if kind == "identify":
        traits = obj(msg, "traits", path)
        context = obj(msg, "context", path)
        record = {
            **head,
            "action": "update",
            "previous_id": None,
            "attributes": attributes_from(traits),
            "device": _device(context, head["context"].get("platform")),
        }
        for field in ("email", "phone"):  # identify's traits carry the person's identifiers
            if record["identity"][field] is None and traits.get(field) not in (None, ""):
                record["identity"] = {**record["identity"], field: text_or_none(traits[field], path + field)}
        return PROFILE_UPDATES, record
    if kind == "alias":
        previous = text_or_none(msg.get("previousId"), f"{path}previousId")
        if previous is None:
            raise Invalid(f"{path}previousId: required for alias")
        if head["identity"]["external_user_id"] is None:
            raise Invalid(f"{path}userId: required for alias")
        record = {**head, "action": "alias", "previous_id": previous, "attributes": [], "device": None}
        return PROFILE_UPDATES, record
    raise Invalid(f"{path}type: {kind!r} is not one of {', '.join(SEGMENT_TYPES)}")


def map_message(
    msg: Any,
    *,
    kind: str | None,
    source: str,
    received_ms: int,
    sent_at: Any = None,
    request_ip: str | None = None,
    path: str = "",
) -> Mapped | Rejection:
    """One Segment message -> ``(topic spec, record)``; ``kind`` None reads ``msg['type']`` (batch)."""
    if not isinstance(msg, dict):
        return Rejection("schema_violation", f"{path or 'body'}: expected a JSON object", "validate")
    try:
        kind = kind or msg.get("type")
        if not isinstance(kind, str):
            raise Invalid(f"{path}type: required in a batch, one of {', '.join(SEGMENT_TYPES)}")
        head = envelope(
            msg, source=source, received_ms=received_ms, sent_at=sent_at, request_ip=request_ip, path=path
        )
        return _map(kind, msg, head, path)
    except Invalid as exc:
        return Rejection("schema_violation", str(exc), "validate")
