"""Pure conversions: a decoded record → the row(s) of its table, and which topic feeds which table.

Each converter returns rows as tuples in the order of its route's ``columns``; the loader
appends the Kafka position (``_topic``, ``_partition``, ``_offset``). A converter raises
:class:`ConversionError` (never anything else) for a record it cannot represent.

Adding a topic (the enricher's ``enriched``/``profiles``, segment changes, trigger messages) is
one :class:`Route` here plus its table in ``ddl.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.common.topics import (
    DEAD_LETTERS,
    VALID_DELIVERY_RECEIPTS,
    VALID_EVENTS,
    VALID_LOCATIONS,
    VALID_PROFILE_UPDATES,
    VALID_TAGS,
    TopicSpec,
)

Row = tuple[Any, ...]
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


@dataclass(frozen=True)
class Route:
    topic: TopicSpec
    table: str
    columns: tuple[str, ...]  # without SOURCE_COLUMNS
    convert: Callable[[dict[str, Any]], list[Row]]

    def rows(self, record: dict[str, Any]) -> list[Row]:
        """The record's rows; any failure is a :class:`ConversionError`."""
        try:
            return self.convert(record)
        except ConversionError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ConversionError(
                f"{type(exc).__name__} on field {exc.args[0] if exc.args else '?'}"
            ) from None


ROUTES: tuple[Route, ...] = (
    Route(VALID_TAGS, "tags", (*ENVELOPE_COLUMNS, "name", "value"), tag_row),
    Route(VALID_EVENTS, "events", (*ENVELOPE_COLUMNS, "name", "kind", "properties"), event_row),
    Route(
        VALID_LOCATIONS,
        "locations",
        (*ENVELOPE_COLUMNS, "kind", "latitude", "longitude", "accuracy_m", "region_id", "region_kind"),
        location_row,
    ),
    Route(
        VALID_DELIVERY_RECEIPTS,
        "message_events",
        (
            *ENVELOPE_COLUMNS,
            *("channel", "status", "campaign_id", "send_id", "link_id", "link_url", "provider", "reason"),
        ),
        message_event_row,
    ),
    Route(
        VALID_PROFILE_UPDATES,
        "profile_updates",
        (
            *ENVELOPE_COLUMNS,
            *("action", "previous_id", "attribute_names", "attribute_types", "attribute_values"),
            *("attribute_scopes", "device_platform", "device_os_version", "device_app_version"),
            *("device_model", "push_token", "push_enabled"),
        ),
        profile_update_row,
    ),
    Route(
        DEAD_LETTERS,
        "dead_letters",
        (
            *("message_id", "event_time", "service", "step", "reason", "message", "source_topic"),
            *("source_partition", "source_offset", "original", "original_key", "truncated"),
        ),
        dead_letter_row,
    ),
)
