"""The loader on its default source (``enriched``) with profiles, segment changes and trigger
messages, against the real broker and chDB; then the segmenter's SQL oracle over the loaded data
(the ``segment_facts`` views) and ``tagstream segments`` as a user runs it.

Envelopes are produced the way the enricher writes them (original record bytes inside, keyed
by person id); the loader runs in a subprocess with a 1 s flush window.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.common.serde import Serde
from services.common.topics import ENRICHED, OUTBOUND_TOPICS, PROFILES, SEGMENT_MEMBERSHIP
from services.loader.ddl import SEGMENT_FACTS_DATABASE
from services.segmenter.definitions import parse
from services.segmenter.sql import compile_segment
from tests.helpers import tagstream, wait_until
from tests.integration.test_loader import LoaderProcess, count, produce

SERDE = Serde()
NOW = datetime.now(UTC).replace(microsecond=0)
T = NOW - timedelta(hours=2)
STORE = (53.3498, -6.2603)


def _input(mid: str, t: datetime, device: str | None, **fields) -> dict:
    return {
        "message_id": mid,
        "event_time": t,
        "received_time": t,
        "source": "sdk",
        "app_id": "ios",
        "backfill": False,
        "identity": {"install_id": device} if device else {},
        "context": {},
        **fields,
    }


def _env(person: str, kind: str, mid: str, t: datetime, original: tuple[str, dict] | None = None, **details):
    return {
        "message_id": mid,
        "person_id": person,
        "device_id": "install_id:d1" if person == "p-1" else None,
        "event_time": t,
        "kind": kind,
        "record_type": original[0] if original else None,
        "original": SERDE.encode(*original) if original else None,
        "details": details,
    }


def _attr(name: str, type_: str, value: str, t: datetime) -> dict:
    return {"name": name, "type": type_, "value": value, "scope": "person", "time": t}


def _profile(person: str, t: datetime, attributes: list[dict], merged_into: str | None = None) -> dict:
    return {"person_id": person, "updated_time": t, "merged_into": merged_into, "attributes": attributes}


ENVELOPES = [
    # p-0 tags as an anonymous visitor, and is merged into p-1 later (the merge envelope below).
    _env("p-0", "tag", "m-tag-0", T, ("tag_hit", _input("m-tag-0", T, "d0", name="team", value="Blues"))),
    _env("p-1", "tag", "m-tag", T, ("tag_hit", _input("m-tag", T, "d1", name="team", value="Reds"))),
    _env(
        "p-1",
        "app_launch",
        "m-launch",
        T,
        ("event", _input("m-launch", T, "d1", name="app_launch", kind="app_launch", properties="{}")),
    ),
    _env("p-1", "session_start", "m-launch:start", T, session_id="p-1:1"),
    _env(
        "p-1",
        "location",
        "m-gps",
        T,
        ("location", _input("m-gps", T, "d1", kind="gps", latitude=STORE[0], longitude=STORE[1])),
    ),
    _env(
        "p-1",
        "geofence_entered",
        "m-gps:geofence_entered:store-1",
        T,
        region_id="store-1",
        region_kind="geofence",
        reported_by="gps",
    ),
    _env(
        "p-1",
        "delivery_receipt",
        "m-rcpt",
        T,
        ("delivery_receipt", _input("m-rcpt", T, None, channel="email", status="opened", campaign_id="c1")),
    ),
    _env(
        "p-1",
        "profile_update",
        "m-upd-1",
        T,
        ("profile_update", _input("m-upd-1", T, "d1", action="update", attributes=[])),
    ),
    _env("p-1", "merge", "m-merge", T, merged_from="p-0"),
    _env(
        "p-2",
        "event",
        "m-order",
        T,
        (
            "event",
            _input(
                "m-order",
                T,
                None,
                name="Order Completed",
                kind="custom",
                properties=json.dumps({"revenue": 150}),
            ),
        ),
    ),
    _env("p-2", "session_start", "m-order:start", T, session_id="p-2:1"),
    _env(
        "p-2",
        "session_end",
        "m-order:end",
        T + timedelta(minutes=5),
        session_id="p-2:1",
        duration_ms="300000",
    ),
    _env("p-2", "teleport", "m-bad", T),  # a kind the loader does not know: a dead letter
]
PROFILE_RECORDS = [
    _profile("p-1", T - timedelta(days=1), [_attr("plan", "string", "basic", T - timedelta(days=1))]),
    _profile("p-1", T, [_attr("plan", "string", "pro", T), _attr("usage", "number", "512.5", T)]),
    _profile(
        "p-2",
        T,
        [
            _attr("plan", "string", "free", T),
            _attr("usage", "number", "12", T),
            _attr("score", "number", "n/a", T),
        ],
    ),
    _profile(
        "p-3",
        T,
        [
            _attr("plan", "string", "free", T),
            _attr("beta", "boolean", "True", T),
            _attr("signup", "date", "2024-05-01T10:00:00+02:00", T),
        ],
    ),
    _profile("p-0", T, [_attr("plan", "string", "pro", T)], merged_into="p-1"),
]


def _change(person: str, segment: str, change: str, t: datetime) -> dict:
    cid = f"{person}|{segment}|{change}|{t.isoformat()}"
    return {
        "change_id": cid,
        "person_id": person,
        "segment_id": segment,
        "change": change,
        "change_time": t,
        "reason": "timer",
        "source_message_id": None,
    }


CHANGES = [
    _change("p-1", "vip", "entered", T),
    _change("p-1", "vip", "entered", T),  # a replayed duplicate: the loader drops the copy
    _change("p-2", "vip", "entered", T),
    _change("p-2", "vip", "exited", T + timedelta(minutes=1)),
    _change("p-1", "pro-plan", "entered", T),
    _change("p-9", "retired", "entered", T),  # a segment no longer defined
]
OUTBOUND = {
    "message_id": "o-1",
    "created_time": T,
    "person_id": "p-1",
    "campaign_id": "c1",
    "channel": "email",
    "destination": "someone@example.com",
    "content": {"subject": "Hi"},
    "trigger_event_id": "m-tag",
    "trigger_kind": "tag",
    "trigger_name": "team",
    "trigger_time": T,
}
# Oracle segments over the loaded data, with their members at NOW.
ORACLE = {
    "pro-plan": ({"attribute": "plan", "equals": "pro"}, ["p-1"]),
    "heavy": ({"attribute": "usage", "gt": 500}, ["p-1"]),
    "beta": ({"attribute": "beta", "equals": True}, ["p-3"]),
    "early": ({"attribute": "signup", "before": "2024-05-01T08:00:01Z"}, ["p-3"]),  # normalised to UTC
    "unparsed": ({"attribute": "score", "equals": "n/a"}, ["p-2"]),  # not a number: stays text
    "reds": ({"tag": "team", "value": "Reds", "within": "1d"}, ["p-1"]),
    "blues": ({"tag": "team", "value": "Blues", "within": "1d"}, ["p-1"]),  # p-0's, merged into p-1
    "buyers": (
        {"event": "Order Completed", "within": "1d", "sum": {"property": "revenue", "gte": 100}},
        ["p-2"],
    ),
    "openers": ({"message": "opened", "channel": "email", "within": "1d"}, ["p-1"]),
    "store": ({"location": "store-1", "action": "entered", "within": "1d"}, ["p-1"]),
    "inside": ({"inside": "store-1"}, ["p-1"]),
    "near": ({"near": {"lat": STORE[0], "lon": STORE[1], "km": 1}}, ["p-1"]),
    "quiet": ({"not": {"session": "started", "within": "1d"}}, ["p-3"]),
}
DEFINITIONS = """segments:
  - {id: vip, name: Very important, condition: {attribute: plan, equals: pro}}
  - {id: pro-plan, condition: {attribute: plan, equals: pro}}
  - {id: never-used, condition: {tag: nothing, at_least: 1}}
"""


@pytest.fixture
def loaders(env, tmp_path):
    started: list[LoaderProcess] = []

    def start(**extra: str) -> LoaderProcess:
        started.append(LoaderProcess(env, tmp_path / "loader.log", **extra))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def _encoded(record_type: str, records: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(r["person_id"].encode(), SERDE.encode(record_type, r)) for r in records]


@pytest.mark.integration
def test_enriched_profiles_changes_and_messages_load_and_feed_the_oracle_and_the_cli(
    settings, env, loaders, tmp_path
):
    """Every enriched record is one person-attributed row in its table (derived sessions,
    geofence transitions and merges in theirs, an unknown kind a dead letter); the latest profile
    wins; the segment oracle over the loaded data names the right persons; ``tagstream segments``
    shows current membership from the loaded changes."""
    produce(settings, ENRICHED, _encoded("enriched_event", ENVELOPES))
    produce(settings, PROFILES, _encoded("profile", PROFILE_RECORDS))
    produce(settings, SEGMENT_MEMBERSHIP, _encoded("segment_membership", CHANGES))
    produce(settings, OUTBOUND_TOPICS[0], _encoded("outbound_message", [OUTBOUND]))

    loader = loaders(TAGSTREAM_LOADER_SOURCE="enriched").wait_ready()
    tables = {
        "tags": 2,
        "events": 2,
        "locations": 1,
        "message_events": 1,
        "profile_updates": 1,
        "sessions": 3,
        "geofence_transitions": 1,
        "identity_merges": 1,
        "segment_membership": 5,  # 6 changes, one a byte-identical copy
        "outbound_messages": 1,
        "dead_letters": 1,
    }
    latest_profiles = (
        "SELECT count(), countIf(person_id = 'p-1' AND has(attribute_values, 'pro')) FROM profiles FINAL"
    )
    wait_until(
        lambda: (
            all(count(loader, t) == n for t, n in tables.items())
            and loader.query(latest_profiles) == [[4, 1]]
        ),
        timeout=90,
        what="every table loaded",
    )
    # person_id filled on every input-record row, and one row per record.
    for table in ("tags", "events", "locations", "message_events", "profile_updates"):
        assert loader.query(
            f"SELECT countIf(person_id IS NULL), count() = uniqExact(message_id) FROM {table}"
        ) == [[0, 1]], table
    assert loader.query("SELECT message_id, person_id, kind FROM events ORDER BY 1") == [
        ["m-launch", "p-1", "app_launch"],
        ["m-order", "p-2", "custom"],
    ]
    assert loader.query("SELECT person_id, kind, duration_ms FROM sessions ORDER BY person_id, kind") == [
        ["p-1", "start", None],
        ["p-2", "end", 300000],
        ["p-2", "start", None],
    ]
    assert loader.query("SELECT person_id, kind, region_id, reported_by FROM geofence_transitions") == [
        ["p-1", "entered", "store-1", "gps"]
    ]
    assert loader.query("SELECT from_person_id, to_person_id FROM identity_merges") == [["p-0", "p-1"]]
    # Under the refused record's own id: an input counted as refused downstream, not as lost.
    assert loader.query("SELECT message_id, service, step, reason, source_topic FROM dead_letters") == [
        ["m-bad", "loader", "convert", "unconvertible", f"{settings.topic_prefix}enriched"]
    ]
    # Latest profile per person (ReplacingMergeTree by offset).
    assert loader.query(
        "SELECT person_id, attribute_values, merged_into FROM profiles FINAL ORDER BY person_id"
    ) == [
        ["p-0", ["pro"], "p-1"],
        ["p-1", ["pro", "512.5"], None],
        ["p-2", ["free", "12", "n/a"], None],
        ["p-3", ["free", "True", "2024-05-01T10:00:00+02:00"], None],
    ]
    assert loader.query("SELECT message_id, channel, campaign_id, person_id FROM outbound_messages") == [
        ["o-1", "email", "c1", "p-1"]
    ]

    # The segmenter's SQL oracle over the loaded tables, through the views.
    now_ms = int(NOW.timestamp() * 1000)
    segments = parse({"segments": [{"id": sid, "condition": c} for sid, (c, _) in ORACLE.items()]})

    def members() -> dict[str, list[str]]:
        return {
            s.id: [row[0] for row in loader.query(compile_segment(s, now_ms, SEGMENT_FACTS_DATABASE))]
            for s in segments
        }

    expected = {sid: persons for sid, (_, persons) in ORACLE.items()}
    # The merge dictionary reloads every 1-5 s: p-0's tag counts for p-1 once it has.
    wait_until(lambda: members() == expected, timeout=30, what="oracle members over the loaded data")

    # tagstream segments, with the loader running (through its API).
    definitions = tmp_path / "segments.yaml"
    definitions.write_text(DEFINITIONS)
    listed = tagstream("segments", "list", "--definitions", str(definitions), "--format", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line) for line in listed.stdout.splitlines()] == [
        {"segment": "vip", "name": "Very important", "members": 1},
        {"segment": "pro-plan", "name": "", "members": 1},
        {"segment": "never-used", "name": "", "members": 0},
        {"segment": "retired", "name": "(not defined)", "members": 1},
    ]
    cli_env = {**env, "TAGSTREAM_SEGMENTER_DEFINITIONS_FILE": str(definitions)}  # the segmenter's
    size = tagstream("segments", "size", "vip", env=cli_env)
    assert (size.returncode, size.stdout.strip()) == (0, "1")
    shown = tagstream("segments", "members", "vip", "--format", "csv", env=cli_env)
    assert shown.returncode == 0, shown.stderr
    assert [line.split(",")[0] for line in shown.stdout.splitlines()] == ["person_id", "p-1"]
    unknown = tagstream("segments", "members", "nope", env=cli_env)
    assert unknown.returncode == 2
    assert "unknown segment 'nope'; defined: never-used, pro-plan, vip" in unknown.stderr


@pytest.mark.integration
def test_exact_copies_of_enriched_records_load_once_also_after_a_loader_restart(settings, loaders):
    """The enricher re-sends a replayed record's outputs after a crash: byte-identical copies on
    `enriched` (docs/design.md). They are not loaded again, whether they arrive in the same run of
    the loader or after it restarted (the window of recent records is read back from the log)."""
    originals = _encoded("enriched_event", ENVELOPES[1:3])  # a tag and an app launch of p-1
    later = _env("p-1", "tag", "m-tag-later", NOW, ("tag_hit", _input("m-tag-later", NOW, "d1", name="x")))
    produce(settings, ENRICHED, originals + originals[:1], partition=0)  # one copy right away

    loader = loaders(TAGSTREAM_LOADER_SOURCE="enriched").wait_ready()
    wait_until(lambda: count(loader, "tags") == 1 and count(loader, "events") == 1, what="originals loaded")
    loader.stop()

    produce(settings, ENRICHED, originals + _encoded("enriched_event", [later]), partition=0)
    loader = loaders(TAGSTREAM_LOADER_SOURCE="enriched").wait_ready()
    wait_until(lambda: count(loader, "tags") == 2, what="the later tag loaded")
    assert loader.query("SELECT message_id, count() FROM tags GROUP BY message_id ORDER BY 1") == [
        ["m-tag", 1],
        ["m-tag-later", 1],
    ]
    assert count(loader, "events") == 1
