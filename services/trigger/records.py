"""From today's record types to the core's :class:`PersonEvent` — most of the future adapter.

The enricher's envelope will carry one of the validated records (``event``, ``tag_hit``,
``location``) plus the resolved person id; these functions turn such a record, as decoded by
``services.common.serde``, into a ``PersonEvent``. A record the trigger cannot use becomes a
:class:`Rejection` (dead letter) or ``None`` (nothing to trigger on, e.g. a raw GPS point).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from services.common.steps import Rejection
from services.trigger.inputs import LocationChange, PersonEvent, SegmentChange

_TRANSITIONS = {"enter": "entered", "exit": "exited", "dwell": "dwelled"}


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)  # epoch milliseconds


def _properties(value: Any) -> dict[str, Any] | Rejection:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value or "{}")
    except (TypeError, ValueError):
        return Rejection("schema_violation", "properties: not JSON", "to_person_event")
    if not isinstance(parsed, dict):
        return Rejection("schema_violation", "properties: not a JSON object", "to_person_event")
    return parsed


def person_event(record_type: str, record: dict[str, Any], person_id: str) -> PersonEvent | Rejection | None:
    """The core's view of one decoded record of ``record_type`` belonging to ``person_id``."""
    when = _time(record["event_time"])
    if record_type == "event":
        props = _properties(record.get("properties"))
        if isinstance(props, Rejection):
            return props
        return PersonEvent(record["message_id"], person_id, when, "event", record["name"], props)
    if record_type == "tag_hit":
        props = {} if record.get("value") is None else {"value": record["value"]}
        return PersonEvent(record["message_id"], person_id, when, "tag", record["name"], props)
    if record_type == "location":
        transition = _TRANSITIONS.get(record.get("kind", "gps"))
        if transition is None or not record.get("region_id"):
            return None  # a plain GPS point: geofence matching happens upstream
        change = LocationChange(transition, record["region_id"], record.get("region_kind"))  # type: ignore[arg-type]
        return PersonEvent(record["message_id"], person_id, when, "location", location=change)
    return None


def segment_event(
    change_id: str, person_id: str, segment_id: str, entered: bool, when: datetime
) -> PersonEvent:
    """A segment-membership change (the segmenter's record fields, whatever their final names)."""
    change = SegmentChange(segment_id, "entered" if entered else "exited")
    return PersonEvent(change_id, person_id, when, "segment", segment=change)


def api_event(
    request_id: str, person_id: str, name: str, payload: dict[str, Any], when: datetime
) -> PersonEvent:
    """A transactional send requested through the API; ``request_id`` makes a retried request idempotent."""
    return PersonEvent(request_id, person_id, when, "api", name, dict(payload))
