"""Semantic validation of decoded raw records: pure functions returning the record or a Rejection.

The Avro schema already guarantees shape and types; these steps check meaning: identities,
time windows, bounds, known statuses, typed attribute values and declared events.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from services.common.steps import Rejection
from services.ingest import reasons
from services.ingest.definitions import Definitions, check_declared

DAY_MS = 24 * 3600 * 1000

_EMAIL_STATUSES = (
    "sent delivered undelivered opened read clicked link_clicked soft_bounced hard_bounced complained "
    "unsubscribed confirmed"
)
RECEIPT_STATUSES: dict[str, frozenset[str]] = {
    "email": frozenset(_EMAIL_STATUSES.split()),
    "sms": frozenset({"sent", "delivered", "undelivered", "clicked"}),
    "push": frozenset({"sent", "delivered", "opened", "clicked", "bounced"}),
    "webpush": frozenset({"sent", "delivered", "opened", "clicked", "bounced"}),
    "inapp": frozenset({"viewed", "clicked"}),
    "app": frozenset({"uninstalled"}),
}


@dataclass(frozen=True)
class Limits:
    future_tolerance_ms: int
    horizon_ms: int
    backfill_horizon_ms: int
    max_properties_bytes: int
    max_properties_keys: int
    max_properties_depth: int
    max_tag_name: int
    max_string_value: int


def epoch_ms(value: datetime | int) -> int:
    return value if isinstance(value, int) else round(value.timestamp() * 1000)


def check_identity(record: dict[str, Any]) -> Rejection | None:
    if not any((record.get("identity") or {}).values()):
        return Rejection(
            reasons.MISSING_IDENTITY,
            "no identifier: set install_id, anonymous_id, external_user_id, email or phone",
        )
    return None


def check_time(record: dict[str, Any], now_ms: int, limits: Limits) -> Rejection | None:
    t = epoch_ms(record["event_time"])
    if t > now_ms + limits.future_tolerance_ms:
        return Rejection(reasons.TIME_OUT_OF_RANGE, f"event_time is {(t - now_ms) // 1000}s in the future")
    horizon = limits.backfill_horizon_ms if record.get("backfill") else limits.horizon_ms
    if t < now_ms - horizon:
        hint = "" if record.get("backfill") else " (set backfill=true to import history)"
        return Rejection(
            reasons.TIME_OUT_OF_RANGE, f"event_time is older than {horizon // DAY_MS} days{hint}"
        )
    return None


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def parse_properties(text: str, limits: Limits) -> dict[str, Any] | Rejection:
    if len(text) > limits.max_properties_bytes:
        return Rejection(
            reasons.OVERSIZED, f"properties are {len(text)} bytes (limit {limits.max_properties_bytes})"
        )
    try:
        props = json.loads(text)
    except json.JSONDecodeError:
        return Rejection(reasons.SCHEMA_VIOLATION, "properties is not JSON")
    if not isinstance(props, dict):
        return Rejection(reasons.SCHEMA_VIOLATION, "properties must be a JSON object")
    if len(props) > limits.max_properties_keys:
        return Rejection(
            reasons.OVERSIZED, f"properties has {len(props)} keys (limit {limits.max_properties_keys})"
        )
    if _depth(props) > limits.max_properties_depth:
        return Rejection(
            reasons.VALUE_OUT_OF_RANGE, f"properties nest deeper than {limits.max_properties_depth}"
        )
    return props


def check_name(record: dict[str, Any], limits: Limits, what: str) -> Rejection | None:
    name = record["name"]
    if not name:
        return Rejection(reasons.SCHEMA_VIOLATION, f"{what} name is empty")
    if len(name) > limits.max_tag_name:
        return Rejection(
            reasons.VALUE_OUT_OF_RANGE, f"{what} name is {len(name)} chars (limit {limits.max_tag_name})"
        )
    return None


def check_tag(record: dict[str, Any], limits: Limits) -> Rejection | None:
    if (rejection := check_name(record, limits, "tag")) is not None:
        return rejection
    value = record.get("value")
    if value is not None and len(value) > limits.max_string_value:
        return Rejection(
            reasons.VALUE_OUT_OF_RANGE, f"tag value is longer than {limits.max_string_value} chars"
        )
    return None


def check_event(record: dict[str, Any], limits: Limits, definitions: Definitions) -> Rejection | None:
    if (rejection := check_name(record, limits, "event")) is not None:
        return rejection
    props = parse_properties(record["properties"], limits)
    if isinstance(props, Rejection):
        return props
    return check_declared(definitions, record["name"], record.get("source") or "", props)


def check_location(record: dict[str, Any]) -> Rejection | None:
    lat, lon, accuracy = record.get("latitude"), record.get("longitude"), record.get("accuracy_m")
    if record["kind"] == "gps":
        if lat is None or lon is None:
            return Rejection(reasons.SCHEMA_VIOLATION, "a gps location needs latitude and longitude")
    elif not record.get("region_id"):
        return Rejection(reasons.SCHEMA_VIOLATION, f"a region {record['kind']} needs region_id")
    if lat is not None and not (math.isfinite(lat) and -90 <= lat <= 90):
        return Rejection(reasons.VALUE_OUT_OF_RANGE, "latitude must be within -90..90")
    if lon is not None and not (math.isfinite(lon) and -180 <= lon <= 180):
        return Rejection(reasons.VALUE_OUT_OF_RANGE, "longitude must be within -180..180")
    if accuracy is not None and not (math.isfinite(accuracy) and accuracy >= 0):
        return Rejection(reasons.VALUE_OUT_OF_RANGE, "accuracy_m must be a non-negative number")
    return None


def check_receipt(record: dict[str, Any]) -> Rejection | None:
    known = RECEIPT_STATUSES[record["channel"]]
    if record["status"] not in known:
        return Rejection(
            reasons.UNKNOWN_STATUS,
            f"status {record['status']!r} is not known for channel {record['channel']} "
            f"({', '.join(sorted(known))})",
        )
    return None


def attribute_value_ok(kind: str, value: str) -> bool:
    if kind == "number":
        try:
            return math.isfinite(float(value))
        except ValueError:
            return False
    if kind == "boolean":
        return value.lower() in ("true", "false")
    if kind == "date":
        try:
            date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
            return True
        except ValueError:
            return False
    return True


def check_profile_update(record: dict[str, Any], limits: Limits) -> Rejection | None:
    identity = record.get("identity") or {}
    action = record["action"]
    if action == "personalize" and not any(identity.get(f) for f in ("external_user_id", "email", "phone")):
        return Rejection(reasons.MISSING_IDENTITY, "personalize needs external_user_id, email or phone")
    if action in ("personalize", "depersonalize", "uninstall") and not identity.get("install_id"):
        return Rejection(reasons.MISSING_IDENTITY, f"{action} needs the device's install_id")
    if action == "alias" and not record.get("previous_id"):
        return Rejection(reasons.SCHEMA_VIOLATION, "alias needs previous_id")
    for index, attribute in enumerate(record.get("attributes") or []):
        if not attribute["name"]:
            return Rejection(reasons.SCHEMA_VIOLATION, f"attributes[{index}].name is empty")
        value = attribute.get("value")
        if value is None:
            continue
        if len(value) > limits.max_string_value:
            return Rejection(
                reasons.VALUE_OUT_OF_RANGE, f"attributes[{index}] ({attribute['name']}) is too long"
            )
        if not attribute_value_ok(attribute["type"], value):
            return Rejection(
                reasons.TYPE_MISMATCH,
                f"attributes[{index}] ({attribute['name']}) is not a valid {attribute['type']}",
            )
    return None


def validate(
    record_type: str, record: dict[str, Any], now_ms: int, limits: Limits, definitions: Definitions
) -> Rejection | None:
    """The first problem found, or None for a valid record."""
    checks = [check_identity(record), check_time(record, now_ms, limits)]
    for rejection in checks:
        if rejection is not None:
            return rejection
    if record_type == "tag_hit":
        return check_tag(record, limits)
    if record_type == "event":
        return check_event(record, limits, definitions)
    if record_type == "location":
        return check_location(record)
    if record_type == "delivery_receipt":
        return check_receipt(record)
    if record_type == "profile_update":
        return check_profile_update(record, limits)
    return Rejection(reasons.SCHEMA_VIOLATION, f"{record_type} records do not belong on a raw topic")
