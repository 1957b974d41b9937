"""The person stage (profiles, sessions, geofences, attribution) as pure functions on (state, record)."""

from __future__ import annotations

from typing import Any

from services.enricher.geofences import Catalogue, Geofence, distance_m, track
from services.enricher.person import PersonConfig, apply, on_timer, timer_due
from tests.enricher_records import T0, event, gps, receipt, tag, update

KIND = {
    "event": "event",
    "tag_hit": "tag",
    "profile_update": "profile_update",
    "location": "location",
    "delivery_receipt": "delivery_receipt",
}
NOW = T0 + 86_400_000  # records arrive a day after they happened (offline devices, backfills)
FENCE = Geofence("shop", 53.3498, -6.2603, 100.0)
CFG = PersonConfig(max_devices=2, session_timeout_ms=60_000, dwell_ms=120_000, catalogue=Catalogue((FENCE,)))


class Person:
    def __init__(self, pid: str = "p-1") -> None:
        self.pid, self.state, self.enriched, self.profile = pid, None, [], None
        self.routed: list[dict[str, Any]] = []
        self.now = NOW  # the enricher's clock (processing time), apart from the records' event times

    def feed(self, record_type: str, record: dict[str, Any], device: str | None = "install_id:d1") -> None:
        env = {
            "message_id": record["message_id"],
            "person_id": self.pid,
            "device_id": device,
            "event_time": record["event_time"],
            "kind": KIND[record_type],
            "record_type": record_type,
            "original": b"",
            "details": {},
        }
        self.apply(env, record)

    def apply(self, env: dict[str, Any], record: dict[str, Any] | None) -> None:
        self.state, outputs = apply(self.state, env, record, CFG, self.now)
        self.take(outputs)

    def tick(self) -> None:
        """The enricher's timer reaches this person at ``self.now``."""
        self.state, outputs = on_timer(self.state, self.pid, self.now, CFG)
        self.take(outputs)

    def take(self, outputs: list[tuple[str, dict[str, Any]]]) -> None:
        for output, value in outputs:
            if output == "enriched":
                self.enriched.append(value)
            elif output == "profile":
                self.profile = value
            else:
                self.routed.append(value)

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.enriched]

    def attribute(self, name: str) -> str | None:
        return next((a["value"] for a in self.profile["attributes"] if a["name"] == name), None)


class TestAttributes:
    def test_latest_update_by_event_time_wins(self):
        """A newer update replaces the value."""
        p = Person()
        p.feed("profile_update", update("u1", T0, {"first_name": "Ann"}))
        p.feed("profile_update", update("u2", T0 + 10, {"first_name": "Anna"}))
        assert p.attribute("first_name") == "Anna"

    def test_late_older_update_does_not_overwrite(self):
        """An update with an older event time arriving later is ignored."""
        p = Person()
        p.feed("profile_update", update("u2", T0 + 10, {"first_name": "Anna"}))
        p.feed("profile_update", update("u1", T0, {"first_name": "Ann"}))
        assert p.attribute("first_name") == "Anna"

    def test_device_scoped_attributes_belong_to_the_device(self):
        """A device attribute is scoped by the device id, apart from person attributes."""
        p = Person()
        p.feed("profile_update", update("u1", T0, {"theme": "dark"}, scope="device"))
        assert [a["scope"] for a in p.profile["attributes"]] == ["install_id:d1"]

    def test_tags_are_kept_on_the_person(self):
        """A tag with a value shows on the profile."""
        p = Person()
        p.feed("tag_hit", tag("t1", T0, "vip", "gold"))
        assert p.profile["tags"] == {"vip": "gold"}

    def test_link_click_updates_fields_and_subscriptions(self):
        """update-<field>=<value> sets an attribute and subscribe-to adds lists; last click recorded."""
        p = Person()
        url = "https://x.io/l?update-city=Cork&subscribe-to=news,deals"
        p.feed("delivery_receipt", receipt("r1", T0, "clicked", url))
        assert p.attribute("city") == "Cork"
        assert p.profile["subscriptions"] == ["deals", "news"]
        assert p.profile["last_click"] == {"email": T0}

    def test_oldest_device_is_evicted_past_the_limit(self):
        """With a limit of 2, a third device evicts the least recently seen."""
        p = Person()
        for i in range(3):
            p.feed("tag_hit", tag(f"t{i}", T0 + i, "x"), device=f"install_id:d{i}")
        assert [d["device_id"] for d in p.profile["devices"]] == ["install_id:d1", "install_id:d2"]

    def test_app_uninstalled_receipt_marks_the_device(self):
        """A delivery receipt saying the app was uninstalled flags that device on the profile."""
        p = Person()
        p.feed("tag_hit", tag("t1", T0, "x"))
        p.feed("delivery_receipt", receipt("r1", T0 + 1, "uninstalled", channel="app"))
        assert [d["uninstalled"] for d in p.profile["devices"]] == [True]

    def test_install_campaign_becomes_the_install_source(self):
        """The first install with campaign fields sets the attribution; later ones do not."""
        p = Person()
        p.feed("event", event("i1", T0, "install", props={"campaign": "spring", "click_id": "c9"}))
        p.feed("event", event("i2", T0 + 1, "install", props={"campaign": "other"}))
        assert p.profile["install_source"] == {"campaign": "spring", "click_id": "c9"}


class TestSessions:
    def test_app_launches_within_30s_are_one(self):
        """A second launch 10 s after the first is not emitted."""
        p = Person()
        p.feed("event", event("l1", T0, "app_launch"))
        p.feed("event", event("l2", T0 + 10_000, "app_launch"))
        p.feed("event", event("l3", T0 + 40_000, "app_launch"))
        assert p.kinds().count("app_launch") == 2

    def test_inactivity_ends_a_session_and_starts_the_next(self):
        """Activity after the timeout closes the session with its duration and counts a new one."""
        p = Person()
        p.feed("event", event("e1", T0))
        p.feed("event", event("e2", T0 + 30_000))
        p.feed("event", event("e3", T0 + 200_000))
        assert p.kinds() == ["session_start", "event", "event", "session_end", "session_start", "event"]
        end = p.enriched[3]
        assert end["details"]["duration_ms"] == "30000"
        assert p.profile["session_count"] == 2 and p.profile["last_session_start"] == T0 + 200_000

    def test_the_clock_ends_a_session_the_timeout_after_its_last_activity_was_applied(self):
        """No further activity: the timer ends the session once, at the event time of its last activity."""
        p = Person()
        p.feed("event", event("e1", T0))
        p.now += 5_000
        p.feed("event", event("e2", T0 + 30_000))
        assert timer_due(p.state) == p.now + CFG.session_timeout_ms
        p.now += CFG.session_timeout_ms - 1
        p.tick()
        assert p.kinds() == ["session_start", "event", "event"]  # activity 1 ms ago by the clock
        p.now += 1
        p.tick()
        p.tick()
        assert p.kinds() == ["session_start", "event", "event", "session_end"]
        end = p.enriched[-1]
        assert end["event_time"] == T0 + 30_000 and end["device_id"] == "install_id:d1"
        assert end["details"] == {"session_id": f"p-1:{T0}", "duration_ms": "30000"}
        assert end["message_id"] == f"p-1:{T0}:end"
        assert timer_due(p.state) is None

    def test_after_the_clock_ended_a_session_late_activity_joins_it_and_later_activity_starts_one(self):
        """The end was reported: activity from within the ended session is tagged with it and changes
        nothing; activity after its last one starts a new session, with no second end."""
        p = Person()
        p.feed("event", event("e1", T0))
        p.feed("event", event("e2", T0 + 30_000))
        p.now += CFG.session_timeout_ms
        p.tick()
        p.feed("event", event("late", T0 + 10_000))
        assert p.enriched[-1]["details"]["session_id"] == f"p-1:{T0}"
        p.feed("event", event("e3", T0 + 40_000))  # within the timeout by event time, but after the end
        assert p.kinds() == [
            "session_start",
            "event",
            "event",
            "session_end",
            "event",
            "session_start",
            "event",
        ]
        assert p.profile["session_count"] == 2
        assert p.enriched[-1]["details"]["session_id"] == f"p-1:{T0 + 40_000}"

    def test_an_activity_that_shows_the_gap_first_ends_the_session_under_the_timers_id(self):
        """Whichever notices the inactivity first ends the session, with one message id for it."""
        p = Person()
        p.feed("event", event("e1", T0))
        p.feed("event", event("e2", T0 + 200_000))
        assert p.enriched[2]["message_id"] == f"p-1:{T0}:end"
        p.now += CFG.session_timeout_ms
        p.tick()
        assert p.kinds().count("session_end") == 2  # the first session's, then the second's
        assert p.enriched[-1]["message_id"] == f"p-1:{T0 + 200_000}:end"


class TestGeofences:
    def test_point_stream_enters_dwells_and_exits_with_hysteresis(self):
        """Jitter just outside the edge does not exit; dwell fires once after the dwell time."""
        p = Person()
        north = 0.0009  # ~100 m of latitude
        points = [
            (0, 53.3498 + 2 * north),
            (60_000, 53.3498),
            (100_000, 53.3498 + 1.2 * north),
            (130_000, 53.3498),
            (190_000, 53.3498),
            (200_000, 53.3498),
            (250_000, 53.3498 + 3 * north),
        ]
        for i, (dt, lat) in enumerate(points):
            p.feed("location", gps(f"g{i}", T0 + dt, lat, -6.2603))
        transitions = [(e["kind"], e["event_time"] - T0) for e in p.enriched if e["kind"] != "location"]
        assert transitions == [
            ("geofence_entered", 60_000),
            ("geofence_dwelled", 190_000),
            ("geofence_exited", 250_000),
        ]
        assert p.profile["last_latitude"] == 53.3498 + 3 * north

    def test_a_device_that_stops_reporting_inside_dwells_by_the_clock(self):
        """No point after the entry (a phone lying still): the clock makes the visit dwell once, at
        the entry's event time + the dwell time; a later exit still exits."""
        p = Person()
        p.feed("location", gps("in", T0, 53.3498, -6.2603))
        p.now += CFG.dwell_ms - 1
        p.tick()
        assert [e["kind"] for e in p.enriched] == ["geofence_entered", "location"]
        p.now += 1
        p.tick()
        dwelled = p.enriched[-1]
        assert (dwelled["kind"], dwelled["event_time"]) == ("geofence_dwelled", T0 + CFG.dwell_ms)
        assert dwelled["details"] == {
            "region_id": "shop",
            "region_kind": "geofence",
            "reported_by": "gps",
            "duration_ms": str(CFG.dwell_ms),
        }
        assert dwelled["message_id"] == f"install_id:d1:shop:{T0}:dwelled"
        p.feed("location", gps("still-in", T0 + 3 * CFG.dwell_ms, 53.3498, -6.2603))
        p.feed("location", gps("out", T0 + 4 * CFG.dwell_ms, 53.3498 + 0.0027, -6.2603))
        kinds = [e["kind"] for e in p.enriched if e["kind"] != "location"]
        assert kinds == ["geofence_entered", "geofence_dwelled", "geofence_exited"]

    def test_a_dwell_a_point_showed_is_not_sent_again_by_the_clock(self):
        """Whichever notices the dwell first sends it, under one message id per visit."""
        p = Person()
        p.feed("location", gps("in", T0, 53.3498, -6.2603))
        p.feed("location", gps("later", T0 + CFG.dwell_ms + 5, 53.3498, -6.2603))
        (dwelled,) = [e for e in p.enriched if e["kind"] == "geofence_dwelled"]
        assert dwelled["message_id"] == f"install_id:d1:shop:{T0}:dwelled"
        assert dwelled["details"]["duration_ms"] == str(CFG.dwell_ms + 5)
        p.now += 10 * CFG.dwell_ms
        p.tick()
        assert [e["kind"] for e in p.enriched].count("geofence_dwelled") == 1

    def test_polygon_fence_contains_its_inside(self):
        """A point inside a polygon fence enters it."""
        square = Geofence("sq", polygon=((0.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.0)))
        _, transitions = track({}, 0.5, 0.5, T0, Catalogue((square,)), 1000, 10.0, NOW)
        assert transitions == [("geofence_entered", "sq")]

    def test_haversine_distance_is_right_at_city_scale(self):
        """One degree of latitude is about 111 km."""
        assert 110_000 < distance_m(53.0, -6.0, 54.0, -6.0) < 112_000


LOGIN_MERGE = {  # stage 1's hand-over: the anonymous p-anon logs in as the known p-known
    "message_id": "login",
    "person_id": "p-anon",
    "device_id": None,
    "event_time": T0 + 9,
    "kind": "merge",
    "record_type": None,
    "original": None,
    "details": {"merged_into": "p-known"},
}


class TestMerge:
    def test_merge_hands_over_and_absorb_combines_profiles(self):
        """The anonymous person's tags and sessions end up on the identified person."""
        anon, known = Person("p-anon"), Person("p-known")
        anon.feed("tag_hit", tag("t1", T0, "browsed", "shoes"))
        known.feed("profile_update", update("u1", T0 + 5, {"first_name": "Ann"}))
        anon.apply(LOGIN_MERGE, None)
        assert anon.profile["merged_into"] == "p-known"
        known.apply(anon.routed[0], None)
        assert known.profile["tags"] == {"browsed": "shoes"}
        assert known.attribute("first_name") == "Ann"
        assert known.profile["session_count"] == 1
        assert known.enriched[-1]["kind"] == "merge"
        assert known.enriched[-1]["details"] == {"merged_from": "p-anon"}

    def test_a_merged_persons_open_session_ends_on_the_survivor(self):
        """The anonymous person's session moves with the merge; the clock ends it for the survivor."""
        anon, known = Person("p-anon"), Person("p-known")
        anon.feed("tag_hit", tag("t1", T0, "browsed", "shoes"))
        anon.apply(LOGIN_MERGE, None)
        assert timer_due(anon.state) is None  # nothing ends on the merged-away person
        known.apply(anon.routed[0], None)
        known.now = anon.now + CFG.session_timeout_ms
        known.tick()
        assert known.enriched[-1]["kind"] == "session_end"
        assert known.enriched[-1]["person_id"] == "p-known"
        assert known.enriched[-1]["details"]["session_id"] == f"p-anon:{T0}"
