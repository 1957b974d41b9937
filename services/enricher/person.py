"""The person stage (stage 2): profile, sessions, geofences and attribution of one person. Pure.

:func:`apply` takes the person's state (a JSON-able dict, one faust table entry keyed by person
id) and one routed envelope with its decoded record, and returns the new state and the outputs:
``("enriched", envelope)``, ``("profile", profile)`` and ``("routed", envelope)`` (a merge hand-over
to another person). Latest-wins comparisons use event time, never arrival order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from services.enricher import profile as prof
from services.enricher.geofences import DEVICE_REGION_KINDS, Catalogue, dwell_due, dwells_due, track

Output = tuple[str, dict[str, Any]]
ATTRIBUTION_KEYS = ("campaign", "source", "medium", "click_id")


@dataclass(frozen=True)
class PersonConfig:
    max_devices: int = 5
    launch_dedup_ms: int = 30_000
    session_timeout_ms: int = 1_800_000
    dwell_ms: int = 300_000
    hysteresis_m: float = 50.0
    catalogue: Catalogue = field(default_factory=Catalogue)


def new_state() -> dict[str, Any]:
    return {"profile": prof.empty(), "sess": None, "launch": {}, "geo": {}}


def apply(
    state: dict[str, Any] | None,
    env: dict[str, Any],
    record: dict[str, Any] | None,
    cfg: PersonConfig,
    now_ms: int,
) -> tuple[dict[str, Any], list[Output]]:
    """``now_ms`` is the enricher's clock: only a session's timer deadline depends on it."""
    state = json.loads(json.dumps(state)) if state else new_state()  # never mutate the caller's copy
    person, t, device = env["person_id"], env["event_time"], env["device_id"]
    kind = env["kind"]
    if kind == "merge":
        return _hand_over(state, env)
    if kind == "absorb":
        return _absorb(state, env, cfg)
    outputs: list[Output] = []
    p = state["profile"]
    prof.seen(p, t)
    if record is not None:
        prof.set_identities(p, record.get("identity") or {})
    if device:
        prof.touch_device(p, device, t, record, cfg.max_devices)
    details: dict[str, str] = {}
    emit = True
    if kind == "event" and record is not None:
        details["name"] = record["name"]
        if record["kind"] == "app_launch":
            emit = _launch(state, device, t, cfg)
            if emit:
                env = {**env, "kind": "app_launch"}
        if record["kind"] == "install":
            _attribute(p, record)
        if record["kind"] == "uninstall" and device:
            prof.uninstall(p, device)
    elif kind == "tag" and record is not None:
        prof.tag(p, record["name"], record.get("value") or "", t)
    elif kind == "profile_update" and record is not None:
        for attr in record.get("attributes") or []:
            scope = device if attr["scope"] == "device" and device else "person"
            prof.set_attribute(p, attr["name"], attr["type"], attr["value"], scope, t)
        if record.get("action") == "uninstall" and device:
            prof.uninstall(p, device)
    elif kind == "delivery_receipt" and record is not None:
        _receipt(p, record, t)
        if record["channel"] == "app" and record["status"] == "uninstalled" and device:
            prof.uninstall(p, device)
    elif kind == "location" and record is not None:
        outputs += _location(state, env, record, cfg, now_ms)
    if emit and kind in ("event", "tag") and device is not None:
        outputs += _session(state, person, device, t, cfg, now_ms, env["message_id"])
        if state["sess"]:
            details["session_id"] = state["sess"]["id"]
    if emit:
        outputs.append(("enriched", {**env, "details": {**env["details"], **details}}))
    outputs.append(("profile", prof.to_record(p, person)))
    return state, outputs


def _launch(state: dict[str, Any], device: str | None, t: int, cfg: PersonConfig) -> bool:
    """True for a new launch; False for one within the dedup window of the previous one."""
    key = device or "-"
    last = state["launch"].get(key)
    if last is not None and abs(t - last) < cfg.launch_dedup_ms:
        return False
    state["launch"][key] = max(t, last or t)
    return True


def _session(
    state: dict[str, Any], person: str, device: str, t: int, cfg: PersonConfig, now_ms: int, message_id: str
) -> list[Output]:
    """Activity at event time ``t``, applied at ``now_ms`` (the enricher's clock)."""
    sess = state["sess"]
    if sess is not None and t < sess["start"]:
        return []  # late activity from before the current session: no session change
    if sess is not None and sess.get("ended") and t <= sess["last"]:
        return []  # late activity inside a session already ended (and reported) by the timer
    if sess is not None and not sess.get("ended") and t - sess["last"] <= cfg.session_timeout_ms:
        sess["last"] = max(sess["last"], t)
        sess["device"], sess["due"] = device, now_ms + cfg.session_timeout_ms
        return []
    outputs: list[Output] = []
    if sess is not None and not sess.get("ended"):  # the gap shows in event time before the timer
        outputs.append(_session_end(person, sess))
    session_id = f"{person}:{t}"
    state["sess"] = {"id": session_id, "start": t, "last": t, "device": device}
    state["sess"]["due"] = now_ms + cfg.session_timeout_ms
    p = state["profile"]
    p["session_count"] += 1
    p["last_session_start"] = max(t, p["last_session_start"] or t)
    start = {"session_id": session_id}
    outputs.append(_derived(person, device, t, "session_start", f"{message_id}:start", start))
    return outputs


def timer_due(state: dict[str, Any] | None) -> int | None:
    """When the enricher's clock next has something to do for this person without further input:
    end the session, or make a visit dwell (None: nothing)."""
    if not state or state["profile"].get("merged_into"):
        return None  # a merged-away person's session and visits went to the survivor
    dues = [dwell_due(visits) for visits in state["geo"].values()]
    dues.append(_session_due(state))
    return min((d for d in dues if d is not None), default=None)


def _session_due(state: dict[str, Any]) -> int | None:
    sess = state.get("sess")
    return None if sess is None or sess.get("ended") else sess.get("due")


def on_timer(
    state: dict[str, Any], person: str, now_ms: int, cfg: PersonConfig
) -> tuple[dict[str, Any], list[Output]]:
    """The clock reached ``now_ms``: a session with no activity applied for the timeout ends (its end
    keeps the event time of its last activity, as if the next activity had shown the gap), and a
    visit with no exit seen for the dwell time dwells (at its entry's event time + the dwell time)."""
    due = timer_due(state)
    if due is None or due > now_ms:
        return state, []
    state = json.loads(json.dumps(state))  # never mutate the caller's copy
    outputs: list[Output] = []
    due = _session_due(state)
    if due is not None and due <= now_ms:
        sess = state["sess"]
        sess["ended"], sess["due"] = True, None
        outputs.append(_session_end(person, sess))
    for device, visits in sorted(state["geo"].items()):
        state["geo"][device], fences = dwells_due(visits, now_ms)
        for fence in fences:
            since = visits[fence]["since"]
            outputs.append(_dwelled(person, device, fence, since, since + cfg.dwell_ms))
    return state, outputs


def _dwelled(person: str, device: str, fence: str, since: int, t: int) -> Output:
    # One id per visit, whichever notices the dwell (a point or the clock): never both.
    details = {
        "region_id": fence,
        "region_kind": "geofence",
        "reported_by": "gps",
        "duration_ms": str(t - since),
    }
    mid = f"{device}:{fence}:{since}:dwelled"
    return _derived(person, None if device == "-" else device, t, "geofence_dwelled", mid, details)


def _session_end(person: str, sess: dict[str, Any]) -> Output:
    # One id per session, whichever way it ends: a timer's end and an activity's end never both go.
    details = {"session_id": sess["id"], "duration_ms": str(sess["last"] - sess["start"])}
    return _derived(person, sess.get("device"), sess["last"], "session_end", f"{sess['id']}:end", details)


def _derived(person: str, device: str | None, t: int, kind: str, mid: str, details: dict[str, str]) -> Output:
    return (
        "enriched",
        {
            "message_id": mid,
            "person_id": person,
            "device_id": device,
            "event_time": t,
            "kind": kind,
            "record_type": None,
            "original": None,
            "details": details,
        },
    )


def _attribute(p: dict[str, Any], record: dict[str, Any]) -> None:
    """The first install with campaign/source/click-id fields becomes the install source."""
    if p["install_source"]:
        return
    props = json.loads(record.get("properties") or "{}")
    context = record.get("context") or {}
    found = {k: str(props[k]) for k in ATTRIBUTION_KEYS if props.get(k) not in (None, "")}
    for k in ATTRIBUTION_KEYS:
        if context.get(f"campaign_{k}") and k not in found:
            found[k] = context[f"campaign_{k}"]
    p["install_source"] = found


def _receipt(p: dict[str, Any], record: dict[str, Any], t: int) -> None:
    status, channel = record["status"], record["channel"]
    if status in ("opened", "open", "read"):
        p["last_open"][channel] = max(t, p["last_open"].get(channel, t))
    if status in ("clicked", "link_clicked"):
        p["last_click"][channel] = max(t, p["last_click"].get(channel, t))
        for name, value in parse_qsl(urlsplit(record.get("link_url") or "").query):
            if name.startswith("update-") and len(name) > 7:
                prof.set_attribute(p, name[7:], "string", value, "person", t)
            elif name == "subscribe-to":
                p["subscriptions"] = sorted(set(p["subscriptions"]) | set(filter(None, value.split(","))))


def _location(
    state: dict[str, Any], env: dict[str, Any], record: dict[str, Any], cfg: PersonConfig, now_ms: int
) -> list[Output]:
    person, device, t = env["person_id"], env["device_id"], env["event_time"]
    if record["kind"] in DEVICE_REGION_KINDS:  # the device saw it itself: pass it on, normalised
        region = record.get("region_id") or ""
        region_kind = record.get("region_kind") or "geofence"
        if region_kind == "ibeacon":
            region = cfg.catalogue.beacon_id(region)
        return [
            _derived(
                person,
                device,
                t,
                DEVICE_REGION_KINDS[record["kind"]],
                f"{env['message_id']}:region",
                {"region_id": region, "region_kind": region_kind, "reported_by": "device"},
            )
        ]
    lat, lon = record.get("latitude"), record.get("longitude")
    if lat is None or lon is None:
        return []
    prof.locate(state["profile"], lat, lon, t)
    key = device or "-"
    visits, transitions = track(
        state["geo"].get(key, {}), lat, lon, t, cfg.catalogue, cfg.dwell_ms, cfg.hysteresis_m, now_ms
    )
    state["geo"][key] = visits
    outputs: list[Output] = []
    for kind, region in transitions:
        if kind == "geofence_dwelled":
            outputs.append(_dwelled(person, key, region, visits[region]["since"], t))
            continue
        details = {"region_id": region, "region_kind": "geofence", "reported_by": "gps"}
        outputs.append(_derived(person, device, t, kind, f"{env['message_id']}:{kind}:{region}", details))
    return outputs


def _hand_over(state: dict[str, Any], env: dict[str, Any]) -> tuple[dict[str, Any], list[Output]]:
    """This (anonymous or merged) person is merged into another: send it everything we know."""
    source, target = env["person_id"], env["details"]["merged_into"]
    if state["profile"].get("merged_into"):
        return state, []  # already handed over (a replayed merge)
    absorb = {
        **env,
        "person_id": target,
        "kind": "absorb",
        "details": {"merged_from": source, "state": json.dumps(state)},
    }
    state["profile"]["merged_into"] = target
    return state, [("routed", absorb), ("profile", prof.to_record(state["profile"], source))]


def _absorb(
    state: dict[str, Any], env: dict[str, Any], cfg: PersonConfig
) -> tuple[dict[str, Any], list[Output]]:
    target, source = env["person_id"], env["details"]["merged_from"]
    other = json.loads(env["details"]["state"])
    prof.merge(state["profile"], other["profile"], cfg.max_devices)
    for key in ("launch", "geo"):
        state[key] = {**other[key], **state[key]}
    if _session_due(state) is None and _session_due(other) is not None:
        state["sess"] = other["sess"]  # the merged person's open session goes on here
    merged = {**env, "kind": "merge", "details": {"merged_from": source}}
    return state, [("enriched", merged), ("profile", prof.to_record(state["profile"], target))]
