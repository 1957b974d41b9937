"""Identity resolution (stage 1): which person does a record belong to? Pure functions.

State is a flat key space (one faust table, one partition, see docs/design.md):

* ``device:<device_key>`` -> ``{"person", "gen", "uninstalled"}``; a device belongs to one person;
* ``id:<kind>:<value>`` -> ``{"person"}``; external user id, email and phone are unique;
* ``person:<id>`` -> ``{"ids": {kind: value}, "devices": [device keys]}``; no ids = anonymous.

:func:`resolve` reads through a :class:`Overlay` and returns the writes plus the routed
envelopes (``enriched_event`` records keyed by person id) or a :class:`Rejection`. Person ids
are derived from the device key and a generation (or the identity), never random, so a replay
after a crash computes the same ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.common.steps import Rejection

IDENTITY_KINDS = ("external_user_id", "email", "phone")  # priority order: the first names the target
KIND_BY_RECORD_TYPE = {
    "tag_hit": "tag",
    "event": "event",
    "location": "location",
    "delivery_receipt": "delivery_receipt",
    "profile_update": "profile_update",
}


class Overlay:
    """Reads see the table plus this record's writes; writes are collected, not applied."""

    def __init__(self, table: Mapping[str, Any]) -> None:
        self.table = table
        self.writes: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.writes[key] if key in self.writes else self.table.get(key)

    def set(self, key: str, value: Any) -> None:
        self.writes[key] = value


@dataclass
class Resolution:
    writes: dict[str, Any] = field(default_factory=dict)
    routed: list[dict[str, Any]] = field(default_factory=list)
    rejection: Rejection | None = None


def device_key(record: Mapping[str, Any]) -> str | None:
    identity = record.get("identity") or {}
    for kind in ("install_id", "anonymous_id"):
        if identity.get(kind):
            return f"{kind}:{identity[kind]}"
    return None


def identities(record: Mapping[str, Any]) -> dict[str, str]:
    identity = record.get("identity") or {}
    return {kind: identity[kind] for kind in IDENTITY_KINDS if identity.get(kind)}


def action(record_type: str, record: Mapping[str, Any]) -> str:
    """personalize, depersonalize, uninstall, alias or '' (anything else)."""
    if record_type == "event":
        value = record.get("kind", "")
    elif record_type == "profile_update":
        value = record.get("action", "")
    else:
        return ""
    return value if value in ("personalize", "depersonalize", "uninstall", "alias") else ""


def _pid(seed: str) -> str:
    return "p-" + hashlib.sha1(seed.encode()).hexdigest()[:20]


def envelope(
    person: str,
    device: str | None,
    record_type: str | None,
    record: Mapping[str, Any],
    original: bytes | None,
    kind: str | None = None,
    details: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "message_id": record["message_id"],
        "person_id": person,
        "device_id": device,
        "event_time": record["event_time"],
        "kind": kind or KIND_BY_RECORD_TYPE.get(record_type or "", record_type or "unknown"),
        "record_type": record_type,
        "original": original,
        "details": details or {},
    }


def resolve(
    record_type: str,
    record: Mapping[str, Any],
    original: bytes | None,
    table: Mapping[str, Any],
    conflict_policy: str = "reject",
) -> Resolution:
    """Resolve one validated record to its person, updating the identity directory."""
    state = Overlay(table)
    out = Resolution()
    device = device_key(record)
    ids = identities(record)
    what = action(record_type, record)
    if what == "alias" and record.get("previous_id") and ids:
        # Segment's alias: the visitor known as previous_id (an anonymous id) is this identity;
        # the same as a login of that anonymous device.
        device, what = f"anonymous_id:{record['previous_id']}", "personalize"
    if device is None:
        if not ids:
            out.rejection = Rejection(
                "missing_identity", "no install, anonymous or person identity", "resolve"
            )
            return out
        person = _owner_or_new(state, ids)
    elif what == "personalize" and ids:
        person, merges, rejection = _personalize(state, device, ids, conflict_policy)
        if rejection:
            out.rejection = rejection
            return out
        for source in merges:  # the merged person's own partition hands its profile over (stage 2)
            out.routed.append(envelope(source, None, None, record, None, "merge", {"merged_into": person}))
    elif what == "depersonalize":
        person = _depersonalize(state, device)
    else:
        person = _device_person(state, device)
    if what == "uninstall" and device is not None:
        state.set(f"device:{device}", {**state.get(f"device:{device}"), "uninstalled": True})
    out.routed.append(envelope(person, device, record_type, record, original))
    out.writes = state.writes
    return out


def _device_person(state: Overlay, device: str) -> str:
    """The device's person; a new device gets a fresh anonymous person."""
    current = state.get(f"device:{device}")
    if current is not None:
        return current["person"]
    person = _pid(f"{device}#0")
    state.set(f"device:{device}", {"person": person, "gen": 0, "uninstalled": False})
    state.set(f"person:{person}", {"ids": {}, "devices": [device]})
    return person


def _owner_or_new(state: Overlay, ids: dict[str, str]) -> str:
    """A backend record's person: the owner of its first known identity, else a new person."""
    for kind, value in ids.items():
        owner = state.get(f"id:{kind}:{value}")
        if owner is not None:
            return owner["person"]
    kind, value = next(iter(ids.items()))
    person = _pid(f"{kind}:{value}")
    _claim(state, person, ids)
    return person


def _claim(state: Overlay, person: str, ids: dict[str, str]) -> None:
    """Attach unowned identities to ``person`` (an existing value of the same kind is kept)."""
    entry = state.get(f"person:{person}") or {"ids": {}, "devices": []}
    merged = dict(entry["ids"])
    for kind, value in ids.items():
        merged.setdefault(kind, value)
        state.set(f"id:{kind}:{value}", {"person": person})
    state.set(f"person:{person}", {**entry, "ids": merged})


def _personalize(
    state: Overlay, device: str, ids: dict[str, str], policy: str
) -> tuple[str, list[str], Rejection | None]:
    """Link ``device`` to the person named by ``ids``; returns (person, persons merged into it)."""
    current = _device_person(state, device)
    owners: list[str] = []
    for kind, value in ids.items():
        owner = state.get(f"id:{kind}:{value}")
        if owner is not None and owner["person"] not in owners:
            owners.append(owner["person"])
    if len(owners) > 1 and policy != "merge":
        kinds = ", ".join(ids)
        message = f"personalize names identities ({kinds}) that belong to {len(owners)} different persons"
        return current, [], Rejection("identity_conflict", message, "resolve")
    current_entry = state.get(f"person:{current}")
    anonymous = not current_entry["ids"]
    merges: list[str] = []
    if not owners:
        # Nobody has these identities: an anonymous person simply becomes identified (its
        # history is already its own); an identified one means another user logs in here.
        target = current if anonymous else _pid(f"{next(iter(ids))}:{next(iter(ids.values()))}")
    else:
        target = owners[0]
        merges = owners[1:]  # only under the merge policy
        if anonymous and current != target:
            merges.append(current)
    for source in merges:
        _absorb(state, source, target)
    _claim(state, target, ids)
    _move_device(state, device, target)
    return target, merges, None


def _absorb(state: Overlay, source: str, target: str) -> None:
    """Point every identity and device of ``source`` at ``target``."""
    entry = state.get(f"person:{source}") or {"ids": {}, "devices": []}
    for kind, value in entry["ids"].items():
        state.set(f"id:{kind}:{value}", {"person": target})
    target_entry = state.get(f"person:{target}") or {"ids": {}, "devices": []}
    ids = {**entry["ids"], **target_entry["ids"]}
    state.set(f"person:{target}", {**target_entry, "ids": ids})
    for device in entry["devices"]:
        _move_device(state, device, target)
    state.set(f"person:{source}", {"ids": {}, "devices": [], "merged_into": target})


def _move_device(state: Overlay, device: str, target: str) -> None:
    record = state.get(f"device:{device}")
    old = record["person"]
    if old != target:
        old_entry = state.get(f"person:{old}")
        if old_entry is not None:
            state.set(
                f"person:{old}", {**old_entry, "devices": [d for d in old_entry["devices"] if d != device]}
            )
    state.set(f"device:{device}", {**record, "person": target})
    entry = state.get(f"person:{target}") or {"ids": {}, "devices": []}
    if device not in entry["devices"]:
        state.set(f"person:{target}", {**entry, "devices": [*entry["devices"], device]})


def _depersonalize(state: Overlay, device: str) -> str:
    """Logout: the device gets a fresh anonymous person; returns the person logging out."""
    current = _device_person(state, device)
    if not state.get(f"person:{current}")["ids"]:
        return current  # already anonymous: nothing to undo
    record = state.get(f"device:{device}")
    gen = record["gen"] + 1
    person = _pid(f"{device}#{gen}")
    state.set(f"person:{person}", {"ids": {}, "devices": []})
    state.set(f"device:{device}", {**record, "gen": gen})
    _move_device(state, device, person)
    return current  # the logout itself is part of the identified person's history
