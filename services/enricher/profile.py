"""A person's profile as kept in state, its latest-wins updates and its ``profile`` record. Pure.

Every value carries the event time that set it; an update older than the kept value loses, so a
late-arriving old update never overwrites a newer one, and replaying a record changes nothing.
"""

from __future__ import annotations

from typing import Any

STANDARD_ATTRIBUTES = ("first_name", "last_name", "email", "phone_number", "timezone", "language")


def empty() -> dict[str, Any]:
    return {
        "updated_time": 0,
        "merged_into": None,
        "external_user_id": None,
        "email": None,
        "phone": None,
        "attributes": {},
        "tags": {},
        "devices": {},
        "first_seen": None,
        "last_seen": None,
        "session_count": 0,
        "last_session_start": None,
        "loc": None,
        "install_source": {},
        "last_open": {},
        "last_click": {},
        "subscriptions": [],
    }


def seen(p: dict[str, Any], t: int) -> None:
    p["first_seen"] = min(t, p["first_seen"] or t)
    p["last_seen"] = max(t, p["last_seen"] or t)
    p["updated_time"] = max(t, p["updated_time"])


def set_identities(p: dict[str, Any], identity: dict[str, Any]) -> None:
    for kind in ("external_user_id", "email", "phone"):
        if identity.get(kind) and not p[kind]:
            p[kind] = identity[kind]


def set_attribute(p: dict[str, Any], name: str, type_: str, value: str | None, scope: str, t: int) -> bool:
    """Latest wins by event time; returns whether the value was taken."""
    key = f"{scope}|{name}"
    kept = p["attributes"].get(key)
    if kept is not None and kept["time"] > t:
        return False
    p["attributes"][key] = {"name": name, "type": type_, "value": value, "scope": scope, "time": t}
    return True


def tag(p: dict[str, Any], name: str, value: str, t: int) -> None:
    kept = p["tags"].get(name)
    if kept is None or kept[1] <= t:
        p["tags"][name] = [value, t]


def touch_device(p: dict[str, Any], device: str, t: int, record: dict[str, Any] | None, limit: int) -> None:
    d = p["devices"].get(device) or {
        "platform": None,
        "push_token": None,
        "uninstalled": False,
        "last_seen": t,
    }
    d["last_seen"] = max(t, d["last_seen"])
    info = (record or {}).get("device") or {}
    platform = info.get("platform") or ((record or {}).get("context") or {}).get("platform")
    d["platform"] = platform or d["platform"]
    d["push_token"] = info.get("push_token") or d["push_token"]
    p["devices"][device] = d
    _evict(p, limit)


def _evict(p: dict[str, Any], limit: int) -> None:
    while len(p["devices"]) > limit:
        oldest = min(p["devices"], key=lambda k: (p["devices"][k]["last_seen"], k))
        del p["devices"][oldest]


def uninstall(p: dict[str, Any], device: str) -> None:
    if device in p["devices"]:
        p["devices"][device]["uninstalled"] = True


def locate(p: dict[str, Any], lat: float, lon: float, t: int) -> None:
    if p["loc"] is None or p["loc"][2] <= t:
        p["loc"] = [lat, lon, t]


def merge(p: dict[str, Any], other: dict[str, Any], limit: int = 5) -> None:
    """Fold another person's profile into ``p``: per value, the later event time wins."""
    for attr in other["attributes"].values():
        set_attribute(p, attr["name"], attr["type"], attr["value"], attr["scope"], attr["time"])
    for name, (value, t) in other["tags"].items():
        tag(p, name, value, t)
    for device, d in other["devices"].items():
        mine = p["devices"].get(device)
        if mine is None or mine["last_seen"] < d["last_seen"]:
            p["devices"][device] = d
    _evict(p, limit)
    for t in (other["first_seen"], other["last_seen"]):
        if t is not None:
            seen(p, t)
    p["session_count"] += other["session_count"]
    if other["last_session_start"]:
        p["last_session_start"] = max(other["last_session_start"], p["last_session_start"] or 0)
    if other["loc"]:
        locate(p, *other["loc"])
    p["install_source"] = p["install_source"] or other["install_source"]
    for key in ("last_open", "last_click"):
        for channel, t in other[key].items():
            p[key][channel] = max(t, p[key].get(channel, t))
    p["subscriptions"] = sorted(set(p["subscriptions"]) | set(other["subscriptions"]))
    for kind in ("external_user_id", "email", "phone"):
        p[kind] = p[kind] or other[kind]


def to_record(p: dict[str, Any], person: str) -> dict[str, Any]:
    """The ``profile`` record (schemas/profile.avsc)."""
    loc = p["loc"] or [None, None, None]
    devices = sorted(p["devices"].items(), key=lambda kv: (kv[1]["last_seen"], kv[0]))
    return {
        "person_id": person,
        "updated_time": p["updated_time"],
        "merged_into": p["merged_into"],
        "external_user_id": p["external_user_id"],
        "email": p["email"],
        "phone": p["phone"],
        "attributes": [p["attributes"][k] for k in sorted(p["attributes"])],
        "tags": {name: value for name, (value, _) in p["tags"].items()},
        "devices": [{"device_id": k, **v} for k, v in devices],
        "first_seen": p["first_seen"],
        "last_seen": p["last_seen"],
        "session_count": p["session_count"],
        "last_session_start": p["last_session_start"],
        "last_latitude": loc[0],
        "last_longitude": loc[1],
        "last_location_time": loc[2],
        "install_source": p["install_source"],
        "last_open": p["last_open"],
        "last_click": p["last_click"],
        "subscriptions": p["subscriptions"],
    }
