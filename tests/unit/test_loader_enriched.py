"""Pure conversions of the enricher's, segmenter's and trigger's records into loader rows."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.common.serde import Serde
from services.enricher.geofences import load_catalogue
from services.generator import catalogue as cat
from services.loader.enriched import ENRICHED_ROUTE, routes_for
from services.loader.rows import COLUMNS, ROUTES, ConversionError

SERDE = Serde()
ROUTE = {route.table: route for route in ROUTES}
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def tag_hit(**overrides):
    record = {
        "message_id": "m1",
        "event_time": T0,
        "received_time": None,
        "source": "api",
        "app_id": "ios",
        "backfill": False,
        "identity": {"install_id": "dev-1", "external_user_id": "u-1"},
        "context": {},
        "name": "team",
        "value": "Reds",
    }
    return record | overrides


def envelope(kind, original=None, record_type=None, **details):
    return {
        "message_id": "e1",
        "person_id": "p-1",
        "device_id": "install_id:dev-1",
        "event_time": T0,
        "kind": kind,
        "record_type": record_type,
        "original": original,
        "details": details,
    }


def outputs(record):
    """(table → rows as column dicts) of one enriched record."""
    return {
        table: [dict(zip(COLUMNS[table], row, strict=True)) for row in rows]
        for table, rows in ENRICHED_ROUTE.outputs(record, SERDE.decode).items()
    }


class TestEnrichedOriginals:
    def test_a_tag_becomes_the_same_row_as_from_tags_valid_with_the_person(self):
        """The envelope's original record converts exactly as ingest's output would, plus person_id."""
        original = SERDE.encode("tag_hit", tag_hit())
        (row,) = outputs(envelope("tag", original, "tag_hit"))["tags"]
        (valid,) = ROUTE["tags"].rows(tag_hit())
        expected = dict(zip(COLUMNS["tags"], valid, strict=True)) | {"person_id": "p-1"}
        assert row == expected

    def test_an_app_launch_is_an_events_row(self):
        """A launch the enricher counted keeps its original event in events."""
        event = tag_hit(name="app_launch", kind="app_launch", properties="{}")
        del event["value"]
        original = SERDE.encode("event", event)
        (row,) = outputs(envelope("app_launch", original, "event"))["events"]
        assert (row["person_id"], row["kind"], row["message_id"]) == ("p-1", "app_launch", "m1")

    def test_an_original_of_the_wrong_type_is_a_conversion_error(self):
        """A tag envelope carrying an event is refused with both types named."""
        event = tag_hit(kind="custom", properties="{}")
        del event["value"]
        with pytest.raises(ConversionError, match="event, expected tag_hit"):
            outputs(envelope("tag", SERDE.encode("event", event), "event"))

    def test_undecodable_or_missing_original_is_a_conversion_error(self):
        """Broken bytes or no bytes where the kind needs a record become dead letters, not crashes."""
        with pytest.raises(ConversionError, match="undecodable"):
            outputs(envelope("tag", b"\x00garbage", "tag_hit"))
        with pytest.raises(ConversionError, match="original"):
            outputs(envelope("location", None, "location"))


class TestEnrichedDerived:
    def test_session_start_and_end_go_to_sessions(self):
        """Derived session events carry the session id; an end also its duration."""
        (start,) = outputs(envelope("session_start", session_id="p-1:1"))["sessions"]
        (end,) = outputs(envelope("session_end", session_id="p-1:1", duration_ms="90000"))["sessions"]
        assert (start["kind"], start["session_id"], start["duration_ms"]) == ("start", "p-1:1", None)
        assert (end["kind"], end["duration_ms"], end["person_id"]) == ("end", 90000, "p-1")

    def test_geofence_kinds_go_to_geofence_transitions(self):
        """entered/exited/dwelled keep the region and who noticed it."""
        record = envelope("geofence_dwelled", region_id="store-1", region_kind="geofence", reported_by="gps")
        (row,) = outputs(record)["geofence_transitions"]
        assert (row["kind"], row["region_id"], row["reported_by"]) == ("dwelled", "store-1", "gps")

    def test_a_merge_records_from_and_to(self):
        """A merge envelope is keyed by the surviving person and names the merged one."""
        (row,) = outputs(envelope("merge", merged_from="p-0"))["identity_merges"]
        assert row == {"from_person_id": "p-0", "to_person_id": "p-1", "merged_at": T0}

    def test_an_unknown_kind_is_refused(self):
        """A kind the loader does not know is a dead letter, never silently dropped."""
        with pytest.raises(ConversionError, match="unknown enriched kind"):
            outputs(envelope("teleport"))

    def test_a_geofence_without_region_is_refused(self):
        """A transition must name its region."""
        with pytest.raises(ConversionError, match="region_id"):
            outputs(envelope("geofence_entered"))


class TestOtherTopics:
    def test_a_profile_keeps_attributes_aligned_and_times_as_datetimes(self):
        """Attribute arrays stay aligned; last_open millisecond maps become times."""
        profile = {
            "person_id": "p-1",
            "updated_time": T0,
            "attributes": [
                {"name": "plan", "type": "string", "value": "pro", "scope": "person", "time": T0},
                {"name": "usage", "type": "number", "value": "512.5", "scope": "person", "time": T0},
            ],
            "tags": {"team": "Reds"},
            "devices": [{"device_id": "install_id:d", "platform": "ios", "last_seen": T0}],
            "session_count": 3,
            "last_open": {"email": T0_MS},
        }
        (row,) = ROUTE["profiles"].rows(profile)
        values = dict(zip(COLUMNS["profiles"], row, strict=True))
        assert values["attribute_names"] == ["plan", "usage"]
        assert values["attribute_values"] == ["pro", "512.5"]
        assert values["device_platforms"] == ["ios"]
        assert values["last_open"] == {"email": T0}
        assert (values["session_count"], values["merged_into"], values["tags"]) == (3, None, {"team": "Reds"})

    def test_a_membership_change_is_one_row(self):
        """Every field of a change lands in its column; change_time is the row's event_time."""
        change = {
            "change_id": "c1",
            "person_id": "p-1",
            "segment_id": "vip",
            "change": "entered",
            "change_time": T0,
            "reason": "event:purchase",
        }
        (row,) = ROUTE["segment_membership"].rows(change)
        values = dict(zip(COLUMNS["segment_membership"], row, strict=True))
        assert (values["segment_id"], values["change"], values["event_time"]) == ("vip", "entered", T0)
        assert values["source_message_id"] is None

    def test_a_membership_change_without_segment_is_refused(self):
        """A change must name its segment."""
        with pytest.raises(ConversionError, match="segment_id"):
            ROUTE["segment_membership"].rows({"change_id": "c1", "person_id": "p"})


class TestSources:
    def test_enriched_replaces_the_valid_topics_and_keeps_the_others(self):
        """The default source loads enriched, never *.valid; both load profiles and dead letters."""
        enriched = {r.topic.name for r in routes_for("enriched")}
        valid = {r.topic.name for r in routes_for("valid")}
        assert "enriched" in enriched and not any(t.endswith(".valid") for t in enriched)
        assert "enriched" not in valid and "tags.valid" in valid
        common = {"dead-letters", "profiles", "segment-membership", "outbound.email", "outbound.webhook"}
        assert common <= enriched & valid

    def test_an_unknown_source_is_refused(self):
        """A typo in the setting is an error, not an empty loader."""
        with pytest.raises(ValueError, match="unknown loader source"):
            routes_for("raw")


class TestDemoGeofences:
    def test_the_demo_catalogue_is_the_generators_geofences(self):
        """make run gives the enricher the fences the generator walks around, so visits appear."""
        path = Path(__file__).resolve().parents[2] / "config" / "geofences.example.json"
        fences = load_catalogue(path).geofences
        assert [(g.id, g.latitude, g.longitude, g.radius_m) for g in fences] == [
            (g.id, g.latitude, g.longitude, g.radius_m) for g in cat.GEOFENCES
        ]
        assert json.loads(path.read_text())["beacons"] == []
