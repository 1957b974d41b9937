"""Builders of validated input records for enricher tests (the shapes ingest writes)."""

from __future__ import annotations

import json
from typing import Any

T0 = 1_795_000_000_000  # a fixed event time (ms) so tests read as a timeline


def identity(**ids: str) -> dict[str, str | None]:
    base: dict[str, str | None] = dict.fromkeys(
        ("install_id", "anonymous_id", "external_user_id", "email", "phone")
    )
    base.update(ids)
    return base


def envelope(mid: str, t: int, ids: dict[str, str], **context: str) -> dict[str, Any]:
    return {
        "message_id": mid,
        "event_time": t,
        "received_time": None,
        "source": "api",
        "app_id": None,
        "backfill": False,
        "identity": identity(**ids),
        "context": context,
    }


def event(mid: str, t: int, kind: str = "custom", name: str = "x", props: dict | None = None, **ids: str):
    return {**envelope(mid, t, ids), "name": name, "kind": kind, "properties": json.dumps(props or {})}


def tag(mid: str, t: int, name: str, value: str | None = None, **ids: str) -> dict[str, Any]:
    return {**envelope(mid, t, ids), "name": name, "value": value}


def update(
    mid: str, t: int, attrs: dict[str, str], action: str = "update", scope: str = "person", **ids: str
):
    attributes = [{"name": k, "type": "string", "value": v, "scope": scope} for k, v in attrs.items()]
    return {
        **envelope(mid, t, ids),
        "action": action,
        "previous_id": None,
        "attributes": attributes,
        "device": None,
    }


def gps(mid: str, t: int, lat: float, lon: float, **ids: str) -> dict[str, Any]:
    return {
        **envelope(mid, t, ids),
        "kind": "gps",
        "latitude": lat,
        "longitude": lon,
        "accuracy_m": 5.0,
        "region_id": None,
        "region_kind": None,
    }


def receipt(mid: str, t: int, status: str, link_url: str | None = None, channel: str = "email", **ids: str):
    return {
        **envelope(mid, t, ids),
        "channel": channel,
        "status": status,
        "campaign_id": None,
        "send_id": None,
        "link_id": None,
        "link_url": link_url,
        "provider": None,
        "reason": None,
    }
