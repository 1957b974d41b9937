"""Pure conversions: a decoded record → the row(s) of its table, and which topic feeds which table.

Each converter returns rows as tuples in the order of its route's ``columns``; the loader
appends the Kafka position (``_topic``, ``_partition``, ``_offset``). A converter raises
:class:`ConversionError` (never anything else) for a record it cannot represent.

Adding a topic is one :class:`Route` here plus its table in ``ddl.py``. The enricher's
``enriched`` topic fans out to several tables by ``kind``: that route is in ``enriched.py``.
Which of ``enriched`` or the five ``*.valid`` topics is loaded: ``enriched.routes_for``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.common.topics import (
    DEAD_LETTERS,
    OUTBOUND_TOPICS,
    PROFILES,
    SEGMENT_MEMBERSHIP,
    VALID_DELIVERY_RECEIPTS,
    VALID_EVENTS,
    VALID_LOCATIONS,
    VALID_PROFILE_UPDATES,
    VALID_TAGS,
    TopicSpec,
)

Row = tuple[Any, ...]
Decode = Callable[[bytes], tuple[str, dict[str, Any]]]  # Avro bytes -> (record type, record)
SOURCE_COLUMNS = ("_topic", "_partition", "_offset")
IDENTITY_FIELDS = ("install_id", "anonymous_id", "external_user_id", "email", "phone")
ENVELOPE_COLUMNS = (
    "message_id",
    "event_time",
    "received_time",
    "source",
    "app_id",
    "backfill",
    *IDENTITY_FIELDS,
    "identity_key",
    "person_id",
    "context",
)
PERSON_INDEX = ENVELOPE_COLUMNS.index("person_id")


class ConversionError(Exception):
    """The record cannot become a row; the message names the field, never its value."""


def identity_key(identity: dict[str, Any]) -> str:
    """The record's strongest identifier as ``kind:value`` (the same order as its partition key)."""
    for field in IDENTITY_FIELDS:
        if identity.get(field):
            return f"{field}:{identity[field]}"
    return ""


def envelope(record: dict[str, Any]) -> Row:
    try:
        identity = record.get("identity") or {}
        return (
            record["message_id"],
            record["event_time"],
            record.get("received_time"),
            record.get("source") or "",
            record.get("app_id") or "",
            bool(record.get("backfill")),
            *(identity.get(field) for field in IDENTITY_FIELDS),
            identity_key(identity),
            None,  # person_id: filled once the enricher's stream is loaded
            dict(record.get("context") or {}),
        )
    except KeyError as exc:
        raise ConversionError(f"missing field {exc.args[0]}") from None


def tag_row(record: dict[str, Any]) -> list[Row]:
    return [(*envelope(record), record["name"], record.get("value"))]


def event_row(record: dict[str, Any]) -> list[Row]:
    return [
        (*envelope(record), record["name"], record.get("kind") or "custom", record.get("properties") or "{}")
    ]


def location_row(record: dict[str, Any]) -> list[Row]:
    return [
        (
            *envelope(record),
            record.get("kind") or "gps",
            record.get("latitude"),
            record.get("longitude"),
            record.get("accuracy_m"),
            record.get("region_id") or "",
            record.get("region_kind") or "",
        )
    ]


def message_event_row(record: dict[str, Any]) -> list[Row]:
    return [
        (
            *envelope(record),
            record["channel"],
            record["status"],
            record.get("campaign_id") or "",
            record.get("send_id") or record["message_id"],  # a receipt without a send is its own send
            record.get("link_id") or "",
            record.get("link_url"),
            record.get("provider") or "",
            record.get("reason"),
        )
    ]


def profile_update_row(record: dict[str, Any]) -> list[Row]:
    attributes = record.get("attributes") or []
    device = record.get("device") or {}
    return [
        (
            *envelope(record),
            record.get("action") or "update",
            record.get("previous_id"),
            [a["name"] for a in attributes],
            [a.get("type") or "string" for a in attributes],
            [a.get("value") for a in attributes],
            [a.get("scope") or "person" for a in attributes],
            device.get("platform") or "",
            device.get("os_version") or "",
            device.get("app_version") or "",
            device.get("model") or "",
            device.get("push_token"),
            device.get("push_enabled"),
        )
    ]


def dead_letter_row(record: dict[str, Any]) -> list[Row]:
    key = record.get("original_key")
    return [
        (
            record["message_id"],
            record["time"],
            record["service"],
            record["step"],
            record["reason"],
            record["message"],
            record["source_topic"],
            record["source_partition"],
            record["source_offset"],
            record["original"],
            key,
            bool(record.get("truncated")),
        )
    ]


def _ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def profile_row(record: dict[str, Any]) -> list[Row]:
    """The person's latest profile; ``_offset`` (last written wins) is the ReplacingMergeTree version."""
    attributes = record.get("attributes") or []
    devices = record.get("devices") or []
    return [
        (
            record["person_id"],
            record["updated_time"],
            record.get("merged_into"),
            record.get("external_user_id"),
            record.get("email"),
            record.get("phone"),
            [a["name"] for a in attributes],
            [a.get("type") or "string" for a in attributes],
            [a.get("value") for a in attributes],
            [a.get("scope") or "person" for a in attributes],
            [a["time"] for a in attributes],
            dict(record.get("tags") or {}),
            [d["device_id"] for d in devices],
            [d.get("platform") or "" for d in devices],
            [d.get("push_token") for d in devices],
            [bool(d.get("uninstalled")) for d in devices],
            [d["last_seen"] for d in devices],
            record.get("first_seen"),
            record.get("last_seen"),
            int(record.get("session_count") or 0),
            record.get("last_session_start"),
            record.get("last_latitude"),
            record.get("last_longitude"),
            record.get("last_location_time"),
            dict(record.get("install_source") or {}),
            {k: _ms(v) for k, v in (record.get("last_open") or {}).items()},
            {k: _ms(v) for k, v in (record.get("last_click") or {}).items()},
            list(record.get("subscriptions") or []),
        )
    ]


def membership_row(record: dict[str, Any]) -> list[Row]:
    return [
        (
            record["change_id"],
            record["person_id"],
            record["segment_id"],
            record["change"],
            record["change_time"],
            record["reason"],
            record.get("source_message_id"),
        )
    ]


def outbound_row(record: dict[str, Any]) -> list[Row]:
    return [
        (
            record["message_id"],
            record["created_time"],
            record["person_id"],
            record["campaign_id"],
            record["channel"],
            record["destination"],
            record.get("platform"),
            dict(record.get("content") or {}),
            record.get("tracking_token"),
            bool(record.get("transactional")),
            record["trigger_event_id"],
            record["trigger_kind"],
            record.get("trigger_name") or "",
            record["trigger_time"],
            record.get("send_slot"),
        )
    ]


# Every loaded table's columns (without SOURCE_COLUMNS), in the order converters fill them.
COLUMNS: dict[str, tuple[str, ...]] = {
    "tags": (*ENVELOPE_COLUMNS, "name", "value"),
    "events": (*ENVELOPE_COLUMNS, "name", "kind", "properties"),
    "locations": (
        *ENVELOPE_COLUMNS,
        *("kind", "latitude", "longitude", "accuracy_m", "region_id", "region_kind"),
    ),
    "message_events": (
        *ENVELOPE_COLUMNS,
        *("channel", "status", "campaign_id", "send_id", "link_id", "link_url", "provider", "reason"),
    ),
    "profile_updates": (
        *ENVELOPE_COLUMNS,
        *("action", "previous_id", "attribute_names", "attribute_types", "attribute_values"),
        *("attribute_scopes", "device_platform", "device_os_version", "device_app_version"),
        *("device_model", "push_token", "push_enabled"),
    ),
    "dead_letters": (
        *("message_id", "event_time", "service", "step", "reason", "message", "source_topic"),
        *("source_partition", "source_offset", "original", "original_key", "truncated"),
    ),
    "profiles": (
        *("person_id", "updated_at", "merged_into", "external_user_id", "email", "phone"),
        *("attribute_names", "attribute_types", "attribute_values", "attribute_scopes"),
        *("attribute_times", "tags", "device_ids", "device_platforms", "device_push_tokens"),
        *("device_uninstalled", "device_last_seen", "first_seen", "last_seen", "session_count"),
        *("last_session_start", "last_latitude", "last_longitude", "last_location_time"),
        *("install_source", "last_open", "last_click", "subscriptions"),
    ),
    "segment_membership": (
        *("change_id", "person_id", "segment_id", "change", "event_time", "reason"),
        "source_message_id",
    ),
    "outbound_messages": (
        *("message_id", "event_time", "person_id", "campaign_id", "channel", "destination"),
        *("platform", "content", "tracking_token", "transactional", "trigger_event_id"),
        *("trigger_kind", "trigger_name", "trigger_time", "send_slot"),
    ),
    # Fed by `enriched` only (enriched.py).
    "sessions": (
        *("message_id", "person_id", "device_id", "event_time", "kind", "session_id"),
        "duration_ms",
    ),
    "geofence_transitions": (
        *("message_id", "person_id", "device_id", "event_time", "kind", "region_id"),
        *("region_kind", "reported_by"),
    ),
    "identity_merges": ("from_person_id", "to_person_id", "merged_at"),
}


def _failure(exc: Exception) -> ConversionError:
    return ConversionError(f"{type(exc).__name__} on field {exc.args[0] if exc.args else '?'}")


@dataclass(frozen=True)
class Route:
    """One topic → one table."""

    topic: TopicSpec
    table: str
    convert: Callable[[dict[str, Any]], list[Row]]

    @property
    def columns(self) -> tuple[str, ...]:  # without SOURCE_COLUMNS
        return COLUMNS[self.table]

    def rows(self, record: dict[str, Any]) -> list[Row]:
        """The record's rows; any failure is a :class:`ConversionError`."""
        try:
            return self.convert(record)
        except ConversionError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise _failure(exc) from None

    def outputs(self, record: dict[str, Any], _decode: Decode) -> dict[str, list[Row]]:
        """Rows per table (what the loader inserts)."""
        return {self.table: self.rows(record)}


@dataclass(frozen=True)
class FanOutRoute:
    """One topic → several tables; ``convert`` returns ``(table, row)`` pairs (``enriched``)."""

    topic: TopicSpec
    tables: tuple[str, ...]
    convert: Callable[[dict[str, Any], Decode], list[tuple[str, Row]]]

    def outputs(self, record: dict[str, Any], decode: Decode) -> dict[str, list[Row]]:
        try:
            pairs = self.convert(record, decode)
        except ConversionError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise _failure(exc) from None
        out: dict[str, list[Row]] = {}
        for table, row in pairs:
            out.setdefault(table, []).append(row)
        return out


VALID_ROUTES: tuple[Route, ...] = (
    Route(VALID_TAGS, "tags", tag_row),
    Route(VALID_EVENTS, "events", event_row),
    Route(VALID_LOCATIONS, "locations", location_row),
    Route(VALID_DELIVERY_RECEIPTS, "message_events", message_event_row),
    Route(VALID_PROFILE_UPDATES, "profile_updates", profile_update_row),
)
# Loaded whatever the source: their records are not in `enriched` nor in `*.valid`.
COMMON_ROUTES: tuple[Route, ...] = (
    Route(DEAD_LETTERS, "dead_letters", dead_letter_row),
    Route(PROFILES, "profiles", profile_row),
    Route(SEGMENT_MEMBERSHIP, "segment_membership", membership_row),
    *(Route(spec, "outbound_messages", outbound_row) for spec in OUTBOUND_TOPICS),
)
ROUTES: tuple[Route, ...] = (*VALID_ROUTES, *COMMON_ROUTES)
