"""Tracking-link hits -> records: delivery receipts, and profile updates from link attributes.

Pure functions on a verified :class:`TrackingToken`. A click yields ``clicked`` and, when the
token names a link, ``link_clicked``; link attributes ``update-<field>=<value>`` set attributes
and ``subscribe-to=<list>`` sets the boolean attribute ``subscribed.<list>`` to true.
"""

from __future__ import annotations

import uuid
from typing import Any

from services.common.topics import DELIVERY_RECEIPTS, PROFILE_UPDATES, TopicSpec
from services.ingest.collector.attributes import typed
from services.ingest.collector.native import RECEIPT_STATUSES
from services.ingest.collector.tokens import TrackingToken

Mapped = tuple[TopicSpec, dict[str, Any]]
IDENTITY_FIELDS = ("install_id", "anonymous_id", "external_user_id", "email", "phone")
LINK_SOURCE = "tracking"


def _head(token: TrackingToken, now_ms: int, context: dict[str, str]) -> dict[str, Any]:
    return {
        "message_id": str(uuid.uuid4()),  # every hit is its own fact; downstream counts uniques
        "event_time": now_ms,
        "received_time": now_ms,
        "source": LINK_SOURCE,
        "app_id": None,
        "backfill": False,
        "identity": {f: token.identity.get(f) for f in IDENTITY_FIELDS},
        "context": context,
    }


def receipt(token: TrackingToken, status: str, now_ms: int, context: dict[str, str]) -> Mapped | None:
    """A delivery receipt, or None when ``status`` is not one of the channel's (e.g. sms opened)."""
    if status not in RECEIPT_STATUSES.get(token.channel, ()):
        return None
    return DELIVERY_RECEIPTS, {
        **_head(token, now_ms, context),
        "channel": token.channel,
        "status": status,
        "campaign_id": token.campaign_id,
        "send_id": token.send_id,
        "link_id": token.link_id if status in ("clicked", "link_clicked") else None,
        "link_url": token.url if status in ("clicked", "link_clicked") else None,
        "provider": None,
        "reason": None,
    }


def link_attributes(token: TrackingToken) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for key, value in token.attributes.items():
        if key.startswith("update-") and len(key) > len("update-"):
            kind, text = typed(value)
            out.append({"name": key[len("update-") :], "type": kind, "value": text, "scope": "person"})
        elif key == "subscribe-to" and value:
            for name in str(value).split(","):
                if name.strip():
                    out.append(
                        {
                            "name": f"subscribed.{name.strip()}",
                            "type": "boolean",
                            "value": "true",
                            "scope": "person",
                        }
                    )
    return out


def click_records(token: TrackingToken, now_ms: int, context: dict[str, str]) -> list[Mapped]:
    """What one click produces: clicked, link_clicked (if a link id), profile update (if attributes)."""
    records = [receipt(token, "clicked", now_ms, context)]
    if token.link_id:
        records.append(receipt(token, "link_clicked", now_ms, context))
    attributes = link_attributes(token)
    if attributes and token.identity:
        update = {
            **_head(token, now_ms, context),
            "action": "update",
            "previous_id": None,
            "attributes": attributes,
            "device": None,
        }
        records.append((PROFILE_UPDATES, update))
    return [r for r in records if r is not None]
