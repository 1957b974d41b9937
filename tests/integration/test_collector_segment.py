"""The HTTP collector against the real broker, driven by the real Segment Python library."""

from __future__ import annotations

import json

import pytest
from segment.analytics import Client

from services.common.topics import EVENTS, PROFILE_UPDATES
from tests.collector_support import WRITE_KEY, collector_settings, read_records, running_collector


@pytest.fixture
def collector(settings):
    with running_collector(collector_settings(settings)) as base:
        yield base


def _by_id(records):
    return {r["message_id"]: r for r in records}


@pytest.mark.integration
def test_segment_library_calls_arrive_on_their_topics(settings, collector):
    """track/page/screen/group become events and identify/alias profile updates, messageId kept."""
    client = Client(WRITE_KEY, host=collector, sync_mode=True, gzip=True, max_retries=0)
    context = {"app": {"name": "Shop", "version": "5.2.0", "namespace": "com.example.shop"}}
    context |= {"os": {"name": "iOS", "version": "18.1"}, "device": {"id": "dev-1", "model": "iPhone15,2"}}
    client.track("u-7", "Order Completed", {"revenue": 42.5}, context=context, message_id="m-track")
    client.page(
        anonymous_id="anon-1", name="Pricing", properties={"url": "https://x.test/p"}, message_id="m-page"
    )
    client.screen("u-7", name="Cart", message_id="m-screen")
    client.group("u-7", "acme", {"plan": "pro"}, message_id="m-group")
    traits = {
        "email": "ann@example.com",
        "firstName": "Ann",
        "age": 31,
        "vip": True,
        "createdAt": "2024-02-29",
    }
    client.identify("u-7", traits, context=context, message_id="m-identify")
    client.alias("anon-1", "u-7", message_id="m-alias")

    events = _by_id(read_records(settings, EVENTS, 4))
    assert {m: (r["name"], r["kind"]) for m, r in events.items()} == {
        "m-track": ("Order Completed", "purchase"),
        "m-page": ("Pricing", "page"),
        "m-screen": ("Cart", "screen"),
        "m-group": ("group", "group"),
    }
    track = events["m-track"]
    assert json.loads(track["properties"]) == {"revenue": 42.5}
    assert track["identity"]["external_user_id"] == "u-7"
    assert track["identity"]["install_id"] == "dev-1"
    assert track["source"] == "web-sdk"
    assert track["app_id"] == "com.example.shop"
    assert track["context"]["platform"] == "ios"
    assert track["context"]["app_version"] == "5.2.0"
    assert track["context"]["library_name"] == "analytics-python"
    assert events["m-page"]["identity"]["anonymous_id"] == "anon-1"
    assert json.loads(events["m-group"]["properties"]) == {"group_id": "acme", "traits": {"plan": "pro"}}

    updates = _by_id(read_records(settings, PROFILE_UPDATES, 2))
    identify = updates["m-identify"]
    assert identify["action"] == "update"
    assert identify["identity"]["email"] == "ann@example.com"
    assert {a["name"]: (a["type"], a["value"]) for a in identify["attributes"]} == {
        "email": ("string", "ann@example.com"),
        "first_name": ("string", "Ann"),
        "age": ("number", "31"),
        "vip": ("boolean", "true"),
        "created_at": ("date", "2024-02-29"),
    }
    assert identify["device"]["platform"] == "ios"
    assert identify["device"]["model"] == "iPhone15,2"
    alias = updates["m-alias"]
    assert (alias["action"], alias["previous_id"], alias["identity"]["external_user_id"]) == (
        "alias",
        "anon-1",
        "u-7",
    )


@pytest.mark.integration
def test_queued_calls_flush_as_one_batch(settings, collector):
    """The library's default mode queues calls and posts them to /v1/batch on flush."""
    errors = []
    client = Client(WRITE_KEY, host=collector, on_error=lambda e, _batch: errors.append(e), max_retries=0)
    for i in range(20):
        client.track(f"u-{i}", "Viewed Item", {"i": i}, message_id=f"q-{i}")
    client.flush()
    client.join()
    assert errors == []
    events = read_records(settings, EVENTS, 20)
    assert sorted(r["message_id"] for r in events) == sorted(f"q-{i}" for i in range(20))
