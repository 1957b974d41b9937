"""Enriched envelopes to facts: every kind the enricher writes, typed attributes, refusals."""

from __future__ import annotations

from services.common.steps import Rejection
from services.segmenter.enriched import facts_for, iso_date, typed
from services.segmenter.facts import Fact
from tests import segmenter_records as sr
from tests.enricher_records import T0


def facts(env: dict) -> list[Fact] | Rejection:
    record = sr.SERDE.decode(env["original"])[1] if env["original"] else None
    return facts_for(env, record)


class TestFactsFor:
    def test_profile_update_gives_one_typed_attribute_fact_per_attribute(self) -> None:
        """Numbers become floats, booleans bools, dates ISO strings, null removes, text stays text."""
        env = sr.update(
            "p1",
            T0,
            {
                "usage": ("number", "512.5"),
                "vip": ("boolean", "true"),
                "signup": ("date", "2024-03-01T12:00:00+01:00"),
                "plan": ("string", "pro"),
                "gone": ("string", None),
            },
        )
        assert facts(env) == [
            Fact("p1", T0, "attribute", "usage", value=512.5),
            Fact("p1", T0, "attribute", "vip", value=True),
            Fact("p1", T0, "attribute", "signup", value="2024-03-01T11:00:00.000Z"),
            Fact("p1", T0, "attribute", "plan", value="pro"),
            Fact("p1", T0, "attribute", "gone", value=None),
        ]

    def test_event_gives_an_event_fact_with_its_properties(self) -> None:
        """An event (and an app launch) is counted by name, with its JSON properties for filters."""
        env = sr.event("p1", T0, "Order Completed", {"revenue": 30, "coupon": "X"})
        assert facts(env) == [
            Fact("p1", T0, "event", "Order Completed", properties={"revenue": 30, "coupon": "X"})
        ]
        launch = {**sr.event("p1", T0, "Application Opened"), "kind": "app_launch"}
        assert facts(launch) == [Fact("p1", T0, "event", "Application Opened")]

    def test_tag_gives_a_tag_fact_with_its_value(self) -> None:
        """A tag hit is counted by name, with its optional value."""
        assert facts(sr.tag("p1", T0, "browsed", "shoes")) == [
            Fact("p1", T0, "tag", "browsed", value="shoes")
        ]

    def test_receipt_gives_a_message_fact_named_by_status(self) -> None:
        """A delivery receipt is a message fact: status, channel and campaign."""
        env = sr.receipt("p1", T0, "opened", channel="email", campaign="spring")
        assert facts(env) == [Fact("p1", T0, "message", "opened", channel="email", campaign="spring")]

    def test_gps_point_gives_a_position_and_device_region_reports_give_nothing_twice(self) -> None:
        """GPS gives the position; a device-reported enter counts once, through its geofence_entered."""
        assert facts(sr.gps("p1", T0, 53.3, -6.2)) == [Fact("p1", T0, "location", "gps", lat=53.3, lon=-6.2)]
        device_enter = sr.gps("p1", T0, 53.3, -6.2)
        record = sr.SERDE.decode(device_enter["original"])[1]
        assert facts_for(device_enter, {**record, "kind": "enter", "region_id": "shop"}) == []
        for kind, action in (
            ("geofence_entered", "enter"),
            ("geofence_exited", "exit"),
            ("geofence_dwelled", "dwell"),
        ):
            env = sr.envelope(kind, "p1", T0, region_id="shop", region_kind="geofence")
            assert facts(env) == [Fact("p1", T0, "location", action, region="shop")]

    def test_session_start_gives_a_session_fact_and_bookkeeping_kinds_give_none(self) -> None:
        """Sessions count from session_start; session_end, merge and absorb state nothing."""
        assert facts(sr.envelope("session_start", "p1", T0, session_id="s")) == [
            Fact("p1", T0, "session", "started")
        ]
        for kind in ("session_end", "merge", "absorb"):
            assert facts(sr.envelope(kind, "p1", T0)) == []

    def test_malformed_envelopes_are_refused_with_a_reason(self) -> None:
        """Missing originals, non-object properties and regionless geofence events are rejections."""
        no_original = {**sr.tag("p1", T0, "x"), "original": None}
        assert isinstance(r := facts(no_original), Rejection) and r.reason == "missing_original"
        env = sr.event("p1", T0, "E")
        record = {**sr.SERDE.decode(env["original"])[1], "properties": "[1]"}
        assert isinstance(r := facts_for(env, record), Rejection) and r.reason == "bad_properties"
        assert isinstance(r := facts(sr.envelope("geofence_entered", "p1", T0)), Rejection)
        assert r.reason == "missing_region"


class TestTyping:
    def test_values_that_do_not_parse_stay_strings(self) -> None:
        """A bad number, boolean or date is kept as text, so it fails typed tests instead of crashing."""
        assert typed("number", "12x") == "12x"
        assert typed("number", "inf") == "inf"
        assert typed("boolean", "yes") == "yes"
        assert typed("date", "soon") == "soon"

    def test_dates_are_utc_iso(self) -> None:
        """Plain dates stay; datetimes become UTC with milliseconds and Z; naive means UTC."""
        assert iso_date("2025-01-02") == "2025-01-02"
        assert iso_date("2025-01-02T03:04:05") == "2025-01-02T03:04:05.000Z"
        assert iso_date("2025-01-02T03:04:05.678Z") == "2025-01-02T03:04:05.678Z"
