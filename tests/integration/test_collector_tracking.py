"""Tracking links and our own API shapes (tags, locations, regions, receipts) against the real broker."""

from __future__ import annotations

import time

import httpx
import pytest

from services.common.topics import DELIVERY_RECEIPTS, LOCATIONS, PROFILE_UPDATES, TAGS
from services.ingest.collector.tokens import TrackingToken, sign
from tests.collector_support import SECRET, WRITE_KEY, collector_settings, read_records, running_collector


@pytest.fixture
def collector(settings):
    # The 'read' pixel waits this long before counting the email as read (10 s in production).
    with running_collector(collector_settings(settings, collector_read_delay_s=0.3)) as base:
        yield base


def link(**fields) -> str:
    token = TrackingToken(
        **{
            "channel": "email",
            "send_id": "send-1",
            "campaign_id": "bf",
            "identity": {"external_user_id": "u-7"},
        }
        | fields
    )
    return sign(token, SECRET)


def get(base: str, path: str) -> httpx.Response:
    return httpx.get(base + path, follow_redirects=False, timeout=30)


@pytest.mark.integration
def test_open_pixel_click_and_link_attributes_round_trip(settings, collector):
    """Pixel -> opened; held pixel -> read; click -> clicked, link_clicked, profile update, 302."""
    pixel = get(collector, f"/o/{link()}.gif")
    assert (pixel.status_code, pixel.headers["content-type"]) == (200, "image/gif")
    assert pixel.content.startswith(b"GIF89a")
    target = "https://shop.example/sale?x=1"
    token = link(url=target, link_id="hero", attributes={"update-city": "Dublin", "subscribe-to": "news"})
    click = get(collector, f"/c/{token}")
    assert (click.status_code, click.headers["location"]) == (302, target)

    read = get(collector, f"/r/{link()}.gif")
    assert (read.status_code, read.headers["content-type"]) == (200, "image/gif")

    receipts = read_records(settings, DELIVERY_RECEIPTS, 4)
    assert sorted(r["status"] for r in receipts) == ["clicked", "link_clicked", "opened", "read"]
    for r in receipts:
        assert (r["channel"], r["send_id"], r["campaign_id"]) == ("email", "send-1", "bf")
        assert r["identity"]["external_user_id"] == "u-7"
    link_clicked = next(r for r in receipts if r["status"] == "link_clicked")
    assert (link_clicked["link_id"], link_clicked["link_url"]) == ("hero", target)
    [update] = read_records(settings, PROFILE_UPDATES, 1)
    assert update["identity"]["external_user_id"] == "u-7"
    assert {(a["name"], a["type"], a["value"]) for a in update["attributes"]} == {
        ("city", "string", "Dublin"),
        ("subscribed.news", "boolean", "true"),
    }


@pytest.mark.integration
def test_forged_and_expired_tokens_are_refused_without_redirect(collector):
    """A tampered, unsigned or expired click token is a 403/410 page with no Location header."""
    good = link(url="https://shop.example/")
    payload, signature = good.split(".")
    forged_target = link(url="https://evil.example/").split(".")[0] + "." + signature
    expired = link(url="https://shop.example/", expires_at=int(time.time()) - 60)
    for path, status in [
        (f"/c/{forged_target}", 403),
        (f"/c/{payload}.AAAAAAAAAAAAAAAAAAAAAA", 403),
        ("/c/not-a-token", 403),
        (f"/c/{expired}", 410),
        (f"/u/{forged_target}", 403),
        (f"/p/{expired}/ack", 410),
    ]:
        response = get(collector, path)
        assert response.status_code == status, path
        assert "location" not in response.headers
    pixel = get(collector, f"/o/{forged_target}.gif")
    assert (pixel.status_code, pixel.headers["content-type"]) == (200, "image/gif")


@pytest.mark.integration
def test_short_links_push_unsubscribe_and_confirm(settings, collector):
    """Issued short codes redirect, unknown ones 404; push, unsubscribe and confirm links record receipts."""
    auth = (WRITE_KEY, "")
    sms = link(channel="sms", url="https://shop.example/sms", link_id="sms-1")
    issued = httpx.post(collector + "/v1/shortlinks", json={"token": sms}, auth=auth)
    assert issued.status_code == 200
    assert issued.json() == httpx.post(collector + "/v1/shortlinks", json={"token": sms}, auth=auth).json()
    hop = get(collector, issued.json()["path"])
    assert (hop.status_code, hop.headers["location"]) == (302, "https://shop.example/sms")
    unknown = get(collector, "/s/zzzzzzzz")
    assert unknown.status_code == 404 and "location" not in unknown.headers
    forged = httpx.post(collector + "/v1/shortlinks", json={"token": "x.y"}, auth=auth)
    assert forged.status_code == 400

    push = link(channel="push")
    assert get(collector, f"/p/{push}/ack").status_code == 204
    assert get(collector, f"/p/{push}/open").status_code == 204
    assert get(collector, f"/u/{link()}").status_code == 200
    assert get(collector, f"/cf/{link()}").status_code == 200
    receipts = read_records(settings, DELIVERY_RECEIPTS, 5)  # sms has no link_clicked status
    assert sorted((r["channel"], r["status"]) for r in receipts) == [
        ("email", "confirmed"),
        ("email", "unsubscribed"),
        ("push", "delivered"),
        ("push", "opened"),
        ("sms", "clicked"),
    ]


@pytest.mark.integration
def test_tags_locations_regions_and_receipts(settings, collector):
    """Our own JSON shapes land on their raw topics, singly or batched; a bad status names its field."""
    auth = (WRITE_KEY, "")

    def post(path: str, body: dict) -> httpx.Response:
        return httpx.post(collector + path, json=body, auth=auth, timeout=30)

    assert post(
        "/v1/tag", {"name": "registration_complete", "installId": "dev-1", "messageId": "tag-1"}
    ).is_success
    batch = {"batch": [{"name": "journeyform_destination", "value": "New York", "userId": "u-7"}] * 2}
    assert post("/v1/tag", batch).is_success
    tags = read_records(settings, TAGS, 3)
    assert sorted((t["name"], t["value"]) for t in tags) == [
        ("journeyform_destination", "New York"),
        ("journeyform_destination", "New York"),
        ("registration_complete", None),
    ]
    assert post(
        "/v1/location", {"latitude": 53.35, "longitude": -6.26, "accuracy": 12, "installId": "d"}
    ).is_success
    region = {"regionId": "store-7", "transition": "enter", "regionKind": "geofence", "installId": "d"}
    assert post("/v1/region", region).is_success
    locations = read_records(settings, LOCATIONS, 2)
    assert sorted((loc["kind"], loc["region_id"]) for loc in locations) == [
        ("enter", "store-7"),
        ("gps", None),
    ]

    receipt = {"channel": "email", "status": "hard_bounced", "email": "ann@example.com", "sendId": "s-1"}
    assert post("/v1/receipts", receipt | {"provider": "sendgrid", "reason": "550"}).is_success
    [stored] = read_records(settings, DELIVERY_RECEIPTS, 1)
    assert (stored["status"], stored["provider"], stored["identity"]["email"]) == (
        "hard_bounced",
        "sendgrid",
        "ann@example.com",
    )
    bad = post("/v1/receipts", receipt | {"status": "exploded"})
    assert bad.status_code == 400 and bad.json()["message"].startswith("status:")
    off_map = post("/v1/location", {"latitude": 91, "longitude": 0, "installId": "d"})
    assert off_map.status_code == 400 and off_map.json()["message"].startswith("latitude:")
