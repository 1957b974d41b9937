"""Pure steps of the HTTP collector: envelope, Segment mapping, our own shapes, tokens, links, limits."""

from __future__ import annotations

import asyncio
import gzip
import json
import time

import pytest

from services.common.serde import Serde
from services.common.steps import Rejection
from services.common.topics import DELIVERY_RECEIPTS, EVENTS, LOCATIONS, PROFILE_UPDATES, TAGS
from services.ingest.collector.attributes import attributes_from, typed
from services.ingest.collector.envelope import Invalid, context_map, event_time
from services.ingest.collector.limits import RateLimiter, TooLarge, read_body
from services.ingest.collector.links import click_records, receipt
from services.ingest.collector.native import map_native
from services.ingest.collector.segment import map_message
from services.ingest.collector.settings import parse_write_keys
from services.ingest.collector.tokens import TokenError, TrackingToken, sign, verify

NOW = 1_795_000_000_000  # received at, epoch ms


def segment(msg, kind=None, **kwargs):
    return map_message(msg, kind=kind, source="web", received_ms=NOW, **kwargs)


def native(kind, msg):
    return map_native(kind, msg, source="api", received_ms=NOW, sent_at=None, request_ip=None, path="")


class TestEventTime:
    def test_clock_skew_is_corrected_by_received_minus_sent(self):
        """A device clock one hour fast: the event keeps its offset from sentAt, anchored on our clock."""
        msg = {"timestamp": "2026-11-18T11:59:50Z", "sentAt": "2026-11-18T12:00:00Z"}
        assert event_time(msg, None, NOW, "") == NOW - 10_000

    def test_batch_level_sent_at_applies_to_messages_without_their_own(self):
        """sentAt given once for the batch corrects every message in it."""
        assert (
            event_time({"timestamp": "2026-01-01T00:00:00Z"}, "2026-01-01T00:00:05Z", NOW, "") == NOW - 5000
        )

    def test_no_timestamp_means_received_now(self):
        """A message without a timestamp happened when it arrived."""
        assert event_time({}, None, NOW, "") == NOW

    def test_no_sent_at_keeps_the_timestamp(self):
        """Without sentAt there is no skew to measure; the timestamp is taken as is."""
        assert event_time({"timestamp": "2026-01-01T00:00:00Z"}, None, NOW, "") == 1_767_225_600_000

    def test_bad_timestamp_names_the_field(self):
        """An unparseable time is refused with the field path."""
        with pytest.raises(Invalid, match=r"^batch\[2\]\.timestamp:"):
            event_time({"timestamp": "soon"}, None, NOW, "batch[2].")


class TestContextMap:
    def test_nested_context_flattens_to_strings(self):
        """Segment's app, os, device, campaign and location objects become flat string keys."""
        context = {
            "app": {"version": "5.2.0"},
            "os": {"name": "Android", "version": "14"},
            "campaign": {"name": "bf", "source": "mail"},
            "location": {"latitude": 53.3},
            "locale": "en-IE",
        }
        assert context_map(context, None) == {
            "app_version": "5.2.0",
            "os": "Android",
            "os_version": "14",
            "campaign_name": "bf",
            "campaign_source": "mail",
            "location_latitude": "53.3",
            "locale": "en-IE",
            "platform": "android",
        }

    def test_connection_address_fills_a_missing_ip(self):
        """The request's address is used when the SDK sends no context.ip; a browser is platform web."""
        assert context_map({"userAgent": "Mozilla/5.0"}, "10.0.0.9") == {
            "user_agent": "Mozilla/5.0",
            "platform": "web",
            "ip": "10.0.0.9",
        }


class TestSegmentMapping:
    def test_track_keeps_message_id_and_properties(self):
        """A track call becomes an event named after it, messageId unchanged."""
        topic, record = segment(
            {"event": "Signed Up", "userId": 7, "messageId": "abc", "properties": {"a": 1}}, "track"
        )
        assert topic == EVENTS
        assert (record["message_id"], record["name"], record["kind"]) == ("abc", "Signed Up", "custom")
        assert record["identity"]["external_user_id"] == "7"
        assert json.loads(record["properties"]) == {"a": 1}

    def test_semantic_events_get_standard_kinds(self):
        """Segment's Application Opened is our app_launch; Order Completed a purchase."""
        assert (
            segment({"event": "Application Opened", "anonymousId": "a"}, "track")[1]["kind"] == "app_launch"
        )
        assert segment({"event": "Order Completed", "anonymousId": "a"}, "track")[1]["kind"] == "purchase"

    def test_batch_messages_carry_their_type(self):
        """In a batch each message's type picks its mapping."""
        topic, record = segment({"type": "alias", "previousId": "anon", "userId": "u"})
        assert topic == PROFILE_UPDATES and (record["action"], record["previous_id"]) == ("alias", "anon")

    def test_identify_traits_become_typed_attributes_and_identifiers(self):
        """identify -> profile update whose traits are typed attributes; email/phone also identify."""
        topic, record = segment({"userId": "u", "traits": {"email": "a@b.c", "plan": "pro"}}, "identify")
        assert topic == PROFILE_UPDATES
        assert record["identity"]["email"] == "a@b.c"
        assert [a["name"] for a in record["attributes"]] == ["email", "plan"]

    @pytest.mark.parametrize(
        ("msg", "kind", "field"),
        [
            ({"userId": "u"}, "track", "event:"),
            ({"event": "x"}, "track", "userId:"),
            ({"event": "x", "userId": "u", "properties": []}, "track", "properties:"),
            ({"userId": "u"}, "alias", "previousId:"),
            ({"userId": "u"}, "group", "groupId:"),
            ({"userId": "u", "type": "shout"}, None, "type:"),
            ({"userId": "u", "event": "x", "backfill": "yes"}, "track", "backfill:"),
        ],
    )
    def test_schema_violations_name_the_field(self, msg, kind, field):
        """A missing or ill-typed field is a Rejection whose message starts with the field."""
        result = segment(msg, kind)
        assert isinstance(result, Rejection) and result.message.startswith(field)

    def test_every_mapped_record_encodes_with_its_schema(self):
        """What the mapping builds is a valid Avro record of its topic's type."""
        serde = Serde()
        messages = [
            ({"event": "x", "userId": "u", "context": {"os": {"name": "iOS"}}}, "track"),
            ({"name": "Home", "anonymousId": "a", "properties": {"k": [1, 2]}}, "page"),
            (
                {"userId": "u", "traits": {"n": 1.5, "when": "2024-01-02T03:04:05+01:00", "x": None}},
                "identify",
            ),
            ({"userId": "u", "groupId": "g"}, "group"),
        ]
        for msg, kind in messages:
            spec, record = segment(msg, kind)
            _, decoded = serde.decode(serde.encode(spec.record_type, record, check=True))
            assert decoded["message_id"] == record["message_id"]
            assert decoded["identity"] == record["identity"]


class TestAttributes:
    def test_values_are_typed_by_their_json_type(self):
        """bool, number, ISO date/time, null and nested values each get their type and canonical text."""
        assert typed(True) == ("boolean", "true")
        assert typed(182.5) == ("number", "182.5")
        assert typed("2024-02-29") == ("date", "2024-02-29")
        assert typed("2024-01-02T03:04:05+01:00") == ("date", "2024-01-02T02:04:05.000Z")
        assert typed(None) == ("string", None)
        assert typed([1, 2]) == ("string", "[1,2]")

    def test_nested_traits_flatten_and_reserved_names_are_ours(self):
        """address.city is one attribute; firstName is first_name."""
        names = [a["name"] for a in attributes_from({"firstName": "A", "address": {"city": "Cork"}})]
        assert names == ["first_name", "address.city"]


class TestNativeShapes:
    def test_tag_value_is_optional(self):
        """tag(name) and tag(name, value) both map to tag_hit records."""
        assert native("tag", {"name": "t", "installId": "d"})[1]["value"] is None
        topic, record = native("tag", {"name": "t", "value": 3, "installId": "d"})
        assert (topic, record["value"]) == (TAGS, "3")

    def test_region_transition_is_a_location_kind(self):
        """A geofence exit is a location of kind exit naming its region."""
        topic, record = native("region", {"regionId": "r1", "transition": "exit", "installId": "d"})
        assert (topic, record["kind"], record["region_kind"]) == (LOCATIONS, "exit", "geofence")

    def test_receipt_status_must_belong_to_its_channel(self):
        """An SMS cannot be opened; the refusal names the status field."""
        result = native("receipts", {"channel": "sms", "status": "opened", "phone": "+353"})
        assert isinstance(result, Rejection) and result.message.startswith("status:")
        assert (
            native("receipts", {"channel": "sms", "status": "delivered", "phone": "+353"})[0]
            == DELIVERY_RECEIPTS
        )


class TestTokens:
    secret = "s3cret"

    def test_a_signed_token_verifies_to_its_content(self):
        """sign then verify returns the same token."""
        token = TrackingToken(
            "email", "send-1", "c", {"email": "a@b.c"}, "https://x.test", "l1", {"update-a": "1"}
        )
        assert verify(sign(token, self.secret), self.secret) == token

    def test_tampering_or_another_secret_is_forged(self):
        """Changing the payload or signing with another key fails as forged."""
        text = sign(TrackingToken("email", url="https://x.test"), self.secret)
        other = sign(TrackingToken("email", url="https://evil.test"), self.secret).split(".")[0]
        for bad in (f"{other}.{text.split('.')[1]}", sign(TrackingToken("email"), "other")):
            with pytest.raises(TokenError) as caught:
                verify(bad, self.secret)
            assert caught.value.reason == "forged"

    def test_an_expired_token_is_refused(self):
        """Past expires_at a valid signature is not enough."""
        text = sign(TrackingToken("sms", expires_at=int(time.time()) - 1), self.secret)
        with pytest.raises(TokenError) as caught:
            verify(text, self.secret)
        assert caught.value.reason == "expired"

    def test_garbage_is_malformed(self):
        """Something that is not payload.signature is malformed."""
        with pytest.raises(TokenError) as caught:
            verify("garbage", self.secret)
        assert caught.value.reason == "malformed"


class TestLinks:
    def test_click_with_attributes_updates_the_profile(self):
        """A click yields clicked, link_clicked and a profile update from the link attributes."""
        token = TrackingToken(
            "email",
            identity={"external_user_id": "u"},
            link_id="l",
            attributes={"update-tier": "2", "subscribe-to": "a,b"},
        )
        records = click_records(token, NOW, {})
        assert [r[1].get("status", r[1].get("action")) for r in records] == [
            "clicked",
            "link_clicked",
            "update",
        ]
        assert [(a["name"], a["value"]) for a in records[2][1]["attributes"]] == [
            ("tier", "2"),
            ("subscribed.a", "true"),
            ("subscribed.b", "true"),
        ]

    def test_status_the_channel_lacks_is_dropped(self):
        """An SMS token has no opened status: no receipt."""
        assert receipt(TrackingToken("sms"), "opened", NOW, {}) is None


class TestLimits:
    def test_rate_limiter_refuses_past_the_burst_with_a_wait(self):
        """After the burst the next message must wait about 1/rate seconds; other keys are separate."""
        limiter = RateLimiter(rate_per_s=1, burst=2)
        assert limiter.take("k", 2) == 0
        assert limiter.take("k", 1) == 1
        assert limiter.take("other", 1) == 0

    def test_gzip_body_is_inflated_within_the_limit(self):
        """A small gzip body reads back; one inflating past the limit raises TooLarge."""

        async def chunks(data: bytes):
            yield data

        assert asyncio.run(read_body(chunks(gzip.compress(b"{}")), gzip=True)) == b"{}"
        with pytest.raises(TooLarge):
            asyncio.run(read_body(chunks(gzip.compress(b"x" * 10_000)), gzip=True, limit=1000))

    def test_write_keys_parse_from_pairs(self):
        """key=source pairs, commas or lines, comments ignored; a bare key is its own source."""
        assert parse_write_keys("a=web, b=ios\n# note\nc") == {"a": "web", "b": "ios", "c": "c"}
