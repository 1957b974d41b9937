"""Build complete records for tests: every field present, overrides by keyword."""

from __future__ import annotations

import itertools
import time
from typing import Any

_ids = itertools.count(1)


def now_ms() -> int:
    return int(time.time() * 1000)


def identity(**ids: str) -> dict[str, Any]:
    base = {"install_id": None, "anonymous_id": None, "external_user_id": None, "email": None, "phone": None}
    return {**base, **ids}


def envelope(message_id: str | None = None, t: int | None = None, **ids: str) -> dict[str, Any]:
    return {
        "message_id": message_id or f"m-{next(_ids)}",
        "event_time": t if t is not None else now_ms() - 60_000,
        "received_time": None,
        "source": "test",
        "app_id": "app",
        "backfill": False,
        "identity": identity(**(ids or {"install_id": "dev-1"})),
        "context": {},
    }


def tag(name: str = "viewed_offers", value: str | None = None, **kw: Any) -> dict[str, Any]:
    return {**envelope(**kw), "name": name, "value": value}


def event(
    name: str = "Speed Test", kind: str = "custom", properties: str = "{}", **kw: Any
) -> dict[str, Any]:
    return {**envelope(**kw), "name": name, "kind": kind, "properties": properties}


def location(
    lat: float | None = 53.35, lon: float | None = -6.26, kind: str = "gps", **kw: Any
) -> dict[str, Any]:
    region = kw.pop("region_id", None)
    accuracy = kw.pop("accuracy_m", 10.0)
    return {
        **envelope(**kw),
        "kind": kind,
        "latitude": lat,
        "longitude": lon,
        "accuracy_m": accuracy,
        "region_id": region,
        "region_kind": "geofence" if region else None,
    }


def receipt(channel: str = "email", status: str = "delivered", **kw: Any) -> dict[str, Any]:
    return {
        **envelope(**kw),
        "channel": channel,
        "status": status,
        "campaign_id": "c1",
        "send_id": "s1",
        "link_id": None,
        "link_url": None,
        "provider": None,
        "reason": None,
    }


def attribute(name: str, value: str | None, type_: str = "string", scope: str = "person") -> dict[str, Any]:
    return {"name": name, "type": type_, "value": value, "scope": scope}


def profile_update(action: str = "update", attributes: list | None = None, **kw: Any) -> dict[str, Any]:
    previous = kw.pop("previous_id", None)
    return {
        **envelope(**kw),
        "action": action,
        "previous_id": previous,
        "attributes": attributes or [],
        "device": None,
    }
