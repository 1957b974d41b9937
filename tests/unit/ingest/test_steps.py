"""ingest's pure steps: normalisation, validation, declared events, dedupe, the whole pipeline."""

from __future__ import annotations

import pytest

from services.common.serde import Serde
from services.common.steps import Rejection, SourcePosition
from services.ingest.dedupe import MAX_MARKER_BYTES, DedupeStore, batch_markers, marker_key, read_marker
from services.ingest.definitions import Definitions, check_declared
from services.ingest.normalise import normalise, normalise_email, normalise_phone
from services.ingest.pipeline import Context, Duplicate, Refused, Valid, process
from services.ingest.validate import DAY_MS, Limits, attribute_value_ok, validate
from tests import records as r

NOW = 1_795_000_000_000
LIMITS = Limits(600_000, 30 * DAY_MS, 3650 * DAY_MS, 32 * 1024, 200, 5, 128, 4096)
DEFS = Definitions.parse(
    "strict_sources: [backend]\n"
    "events:\n"
    "  - name: Order Completed\n"
    "    properties: {revenue: number, sku: string}\n"
)


def reason(result):
    return result.reason if isinstance(result, Rejection) else None


class TestNormalise:
    def test_email_is_trimmed_and_lower_cased(self):
        """Emails compare case-insensitively, so they are stored lower-case."""
        assert normalise_email("  Ann@Example.COM ") == "ann@example.com"
        assert normalise_email("not-an-email") is None

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("+353 (86) 123-4567", "353861234567"),
            ("00353861234567", "353861234567"),
            ("353861234567", "353861234567"),
        ],
    )
    def test_phone_becomes_international_digits(self, raw, expected):
        """'+', '00' and punctuation are removed; the country code stays."""
        assert normalise_phone(raw) == expected

    @pytest.mark.parametrize("raw", ["12", "086 123 4567", "+353-86-CALL-ME", ""])
    def test_local_or_garbage_phones_are_refused(self, raw):
        """A number that cannot be made international is refused rather than guessed."""
        assert normalise_phone(raw) is None

    def test_received_time_is_stamped_and_blank_ids_become_null(self):
        """received_time is ingest's clock; empty identifiers are dropped, not kept as ''."""
        out = normalise(
            "tag_hit", r.tag(" viewed ", install_id="d1", email=" A@B.CO ") | {"value": " x "}, NOW
        )
        assert out["received_time"] == NOW
        assert out["name"] == "viewed" and out["value"] == "x"
        assert out["identity"]["email"] == "a@b.co" and out["identity"]["phone"] is None

    def test_status_is_lower_cased(self):
        """Receipt statuses are canonical lower-case before they are checked."""
        assert normalise("delivery_receipt", r.receipt(status=" Delivered "), NOW)["status"] == "delivered"


class TestValidate:
    def check(self, record_type, record):
        return reason(validate(record_type, record, NOW, LIMITS, DEFS))

    def test_valid_records_pass(self):
        """Ordinary records of every type are accepted."""
        assert self.check("tag_hit", r.tag(t=NOW)) is None
        assert self.check("location", r.location(t=NOW)) is None
        assert self.check("delivery_receipt", r.receipt("push", "opened", t=NOW)) is None

    def test_time_window(self):
        """Too far ahead or too old is refused; an old backfill record is accepted."""
        assert self.check("tag_hit", r.tag(t=NOW + 11 * 60_000)) == "time_out_of_range"
        assert self.check("tag_hit", r.tag(t=NOW + 9 * 60_000)) is None
        old = r.tag(t=NOW - 31 * DAY_MS)
        assert self.check("tag_hit", old) == "time_out_of_range"
        assert self.check("tag_hit", old | {"backfill": True}) is None

    def test_identity_required(self):
        """A record with no identifier at all cannot be attributed to anyone."""
        record = r.tag(t=NOW) | {"identity": r.identity()}
        assert self.check("tag_hit", record) == "missing_identity"

    @pytest.mark.parametrize(
        ("lat", "lon", "accuracy", "expected"),
        [
            (91.0, 0.0, 1.0, "value_out_of_range"),
            (0.0, 181.0, 1.0, "value_out_of_range"),
            (0.0, 0.0, -1.0, "value_out_of_range"),
            (None, 0.0, 1.0, "schema_violation"),
            (-90.0, 180.0, 0.0, None),
        ],
    )
    def test_location_bounds(self, lat, lon, accuracy, expected):
        """Latitude, longitude and accuracy are checked against their ranges."""
        assert self.check("location", r.location(lat, lon, accuracy_m=accuracy, t=NOW)) == expected

    def test_receipt_status_per_channel(self):
        """A status must exist for the receipt's channel (SMS has no 'opened')."""
        assert self.check("delivery_receipt", r.receipt("sms", "opened", t=NOW)) == "unknown_status"
        assert self.check("delivery_receipt", r.receipt("inapp", "viewed", t=NOW)) is None

    @pytest.mark.parametrize(
        ("kind", "value", "ok"),
        [
            ("number", "12.5", True),
            ("number", "NaN", False),
            ("number", "ten", False),
            ("boolean", "TRUE", True),
            ("boolean", "yes", False),
            ("date", "2024-02-29", True),
            ("date", "2023-02-29", False),
            ("date", "2024-02-29T10:00:00+00:00", True),
            ("string", "anything", True),
        ],
    )
    def test_attribute_types(self, kind, value, ok):
        """Typed attribute values must parse as their declared type."""
        assert attribute_value_ok(kind, value) is ok

    def test_personalize_needs_a_person_identity_and_a_device(self):
        """Login links a device to a person: both sides must be named."""
        assert (
            self.check("profile_update", r.profile_update("personalize", install_id="d1", t=NOW))
            == "missing_identity"
        )
        good = r.profile_update("personalize", install_id="d1", email="a@b.co", t=NOW)
        assert self.check("profile_update", good) is None

    def test_properties_bounds(self):
        """Properties must be a JSON object within size, key-count and depth limits."""
        assert self.check("event", r.event(properties="[1]", t=NOW)) == "schema_violation"
        assert self.check("event", r.event(properties='{"a":"' + "x" * 40_000 + '"}', t=NOW)) == "oversized"
        deep = '{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}'
        assert self.check("event", r.event(properties=deep, t=NOW)) == "value_out_of_range"


class TestDeclaredEvents:
    def test_declared_event_properties_are_checked(self):
        """A declared event's properties must be declared and of the declared type."""
        assert check_declared(DEFS, "Order Completed", "web", {"revenue": 3, "sku": "a"}) is None
        assert check_declared(DEFS, "Order Completed", "web", {"revenue": "3"}).reason == "type_mismatch"
        assert check_declared(DEFS, "Order Completed", "web", {"coupon": "x"}).reason == "unknown_property"

    def test_undeclared_events_depend_on_the_source(self):
        """Undeclared events pass, except from sources marked strict."""
        assert check_declared(DEFS, "Whatever", "web", {}) is None
        assert check_declared(DEFS, "Whatever", "backend", {}).reason == "undeclared_event"

    def test_bad_definitions_name_the_field(self):
        """A malformed definitions file is refused with the path of the problem."""
        with pytest.raises(ValueError, match=r"events\.0\.properties\.revenue"):
            Definitions.parse("events:\n  - name: X\n    properties: {revenue: money}\n")


class TestDedupe:
    def test_window(self):
        """A message_id passes once within the window and again after it."""
        store = DedupeStore(window_ms=1000)
        store.remember(("events", 0), "m1", NOW)
        assert store.is_duplicate(("events", 0), "m1", NOW + 999)
        assert not store.is_duplicate(("events", 0), "m1", NOW + 1000)
        assert not store.is_duplicate(("events", 1), "m1", NOW)

    def test_forget_undoes_an_aborted_batch(self):
        """Entries of a batch whose transaction aborted are removed, so its retry is not a duplicate."""
        store = DedupeStore(window_ms=1000)
        store.remember(("events", 0), "m1", NOW)
        store.forget(("events", 0), ["m1"])
        assert not store.is_duplicate(("events", 0), "m1", NOW)

    def test_batch_markers_round_trip(self):
        """A batch's markers give back topic, every message_id and the first-seen time."""
        ids = ["a|b", "ünï\ncode", "x" * 10, ""]
        markers = list(batch_markers("events", 42, NOW, ids))
        assert len(markers) == 1
        assert [entry for key, value in markers for entry in read_marker(key, value)] == [
            ("events", message_id, NOW) for message_id in ids
        ]

    def test_big_batches_split_into_markers_the_broker_accepts(self):
        """However many ids a batch passed, each marker stays under the size limit; none is lost."""
        ids = [f"{i:06d}-" + "m" * 200 for i in range(6000)]
        markers = list(batch_markers("tags", 7, NOW, ids))
        assert len(markers) > 1 and all(len(value) <= MAX_MARKER_BYTES + 16 for _, value in markers)
        assert len({key for key, _ in markers}) == len(markers)  # compaction keeps every one
        assert [m for key, value in markers for _, m, _ in read_marker(key, value)] == ids

    def test_one_record_markers_of_older_versions_still_read(self):
        """Markers written one per record (before batch markers) are read back after an upgrade."""
        assert read_marker(marker_key("events", "a|b"), b"123") == [("events", "a|b", 123)]
        assert read_marker(b"garbage", b"x") == []
        assert read_marker(b"events|@1.0", b"\x00\x00") == []  # truncated


class TestPipeline:
    def ctx(self):
        return Context(Serde(), LIMITS, DEFS, DedupeStore(DAY_MS), 256 * 1024)

    def source(self, value, topic="events"):
        return SourcePosition(topic, 0, 7, b"k", value)

    def test_valid_record_is_routed_to_its_valid_topic(self):
        """A valid event goes to events.valid keyed by device, with received_time set."""
        ctx = self.ctx()
        value = Serde().encode("event", r.event(t=NOW, install_id="d1"))
        outcome = process(self.source(value), "events", NOW, ctx)
        assert isinstance(outcome, Valid)
        assert outcome.output.name == "events.valid" and outcome.key == b"install_id:d1"
        assert Serde().decode(outcome.value)[1]["received_time"].timestamp() * 1000 == NOW

    def test_second_delivery_is_a_duplicate(self):
        """The same message_id on the same partition passes once."""
        ctx = self.ctx()
        value = Serde().encode("event", r.event(t=NOW, message_id="same"))
        assert isinstance(process(self.source(value), "events", NOW, ctx), Valid)
        assert isinstance(process(self.source(value), "events", NOW + 5, ctx), Duplicate)

    def test_refusals_are_self_describing_dead_letters(self):
        """Garbage, wrong record types and invalid records become dead letters with position and reason."""
        ctx = self.ctx()
        garbage = process(self.source(b"nope"), "events", NOW, ctx)
        assert isinstance(garbage, Refused)
        letter = garbage.dead_letter
        assert (letter["reason"], letter["step"], letter["source_offset"], letter["original"]) == (
            "undecodable",
            "decode",
            7,
            b"nope",
        )
        wrong = process(self.source(Serde().encode("tag_hit", r.tag(t=NOW))), "events", NOW, ctx)
        assert wrong.dead_letter["reason"] == "schema_violation"
        late = process(self.source(Serde().encode("event", r.event(t=NOW - 40 * DAY_MS))), "events", NOW, ctx)
        assert late.dead_letter["reason"] == "time_out_of_range" and late.dead_letter["step"] == "validate"

    def test_oversized_records_are_refused_before_decoding(self):
        """A record over the byte limit is refused as oversized."""
        ctx = self.ctx()
        ctx.max_record_bytes = 10
        outcome = process(self.source(Serde().encode("event", r.event(t=NOW))), "events", NOW, ctx)
        assert outcome.dead_letter["reason"] == "oversized"
