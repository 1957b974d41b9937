"""Every analytics report on a small hand-checked fixture, in the real ClickHouse engine (chDB).

The fixture is loaded through the loader's own conversions and sink; the expected numbers were
worked out by hand from the fixture (see the comments), not by running the same SQL.
"""

from datetime import UTC, datetime

import pytest

from services.common.clickhouse import connect
from services.loader import ddl
from services.loader.analytics import QueryFailed, execute, run_report
from services.loader.enriched import ENRICHED_ROUTE
from services.loader.rows import COLUMNS, ROUTES
from services.loader.sink import ClickHouseSink, Pending

ROUTE = {route.table: route for route in ROUTES}
ALICE = {"external_user_id": "alice"}
BOB = {"install_id": "dev-bob"}
CAROL = {"anonymous_id": "anon-carol"}
DAN = {"install_id": "dev-dan"}
ERIN = {"install_id": "dev-erin"}


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)  # 2026-11-16 and 11-23 are Mondays


def envelope(n: int, when: datetime, identity: dict, app: str = "", **fields) -> dict:
    return {"message_id": f"m{n}", "event_time": when, "identity": identity, "app_id": app, **fields}


TAGS = [
    envelope(1, at(16, 10), ALICE, "ios", name="favourite_team", value="Reds"),
    envelope(2, at(16, 10, 5), ALICE, "ios", name="favourite_team", value="Reds"),
    envelope(3, at(16, 11), BOB, "android", name="favourite_team", value="Blues"),
    envelope(4, at(17, 9), BOB, "android", name="newsletter", value=None),
    envelope(5, at(24, 12), CAROL, "web", name="favourite_team", value="Reds"),
]
EVENTS = [
    envelope(11, at(16, 10), ALICE, "ios", name="app_launch", kind="app_launch"),
    envelope(12, at(16, 10, 20), ALICE, "ios", name="View", kind="custom"),
    envelope(13, at(23, 9), ALICE, "ios", name="app_launch", kind="app_launch"),
    envelope(14, at(16, 10, 59), BOB, "android", name="install", kind="install",
             context={"campaign_source": "facebook"}),
    envelope(15, at(17, 8), DAN, "android", name="install", kind="install"),
    envelope(16, at(17, 8, 30), ERIN, "ios", name="install", kind="install",
             context={"utm_source": "newsletter"}),
]  # fmt: skip


def receipts() -> list[dict]:
    steps = {
        ("bf", "email", "s1"): ["sent", "delivered", "opened", "link_clicked", "clicked"],
        ("bf", "email", "s2"): ["sent", "delivered", "opened"],
        ("bf", "email", "s3"): ["sent", "delivered"],
        ("bf", "email", "s4"): ["sent", "hard_bounced"],
        ("bf", "email", "s5"): ["sent", "delivered", "complained", "unsubscribed"],
        ("bf", "sms", "s6"): ["sent", "delivered"],
        ("bf", "sms", "s7"): ["sent", "undelivered"],
        ("promo", "push", "s8"): ["sent", "delivered", "opened", "clicked"],
    }
    out = []
    for (campaign, channel, send), statuses in steps.items():
        for status in statuses:
            out.append(
                envelope(100 + len(out), at(18, 12, len(out)), ALICE, channel=channel, status=status,
                         campaign_id=campaign, send_id=send)
            )  # fmt: skip
    return out


LOCATIONS = [
    envelope(201, at(16, 10), ALICE, kind="enter", region_id="store-1"),
    envelope(202, at(16, 10, 30), ALICE, kind="exit", region_id="store-1"),  # dwell 1800 s
    envelope(203, at(16, 11), BOB, kind="enter", region_id="store-1"),
    envelope(204, at(16, 11, 10), BOB, kind="exit", region_id="store-1"),  # dwell 600 s
    envelope(205, at(16, 12), BOB, kind="enter", region_id="store-2"),  # never left
    envelope(206, at(16, 13), ALICE, kind="gps", latitude=53.3, longitude=-6.2),  # not a location visit
    envelope(207, at(17, 9), ALICE, kind="enter", region_id="store-1"),
    envelope(208, at(17, 9, 15), ALICE, kind="exit", region_id="store-1"),  # dwell 900 s
]

# Loaded from `enriched`: frank's GPS-derived visit of store-3 (a dwell between enter and exit),
# then, after he was merged into p-frank2, a second visit under his surviving id.
GEOFENCE = [
    {"message_id": f"g{n}", "person_id": person, "device_id": None, "event_time": when, "kind": kind,
     "details": {"region_id": "store-3", "region_kind": "geofence", "reported_by": "gps"}}
    for n, (person, when, kind) in enumerate([
        ("p-frank", at(18, 10), "geofence_entered"),
        ("p-frank", at(18, 10, 6), "geofence_dwelled"),
        ("p-frank", at(18, 10, 20), "geofence_exited"),  # dwell 1200 s
        ("p-frank2", at(18, 11), "geofence_entered"),
        ("p-frank2", at(18, 11, 10), "geofence_exited"),  # dwell 600 s
    ])
]  # fmt: skip
MERGE = {"message_id": "mg", "person_id": "p-frank2", "device_id": None, "event_time": at(18, 10, 30),
         "kind": "merge", "details": {"merged_from": "p-frank"}}  # fmt: skip


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    client = connect(f"chdb://{tmp_path_factory.mktemp('reports') / 'clickhouse'}")
    ddl.apply(client)
    sink = ClickHouseSink(client)
    for table, records in (
        ("tags", TAGS),
        ("events", EVENTS),
        ("message_events", receipts()),
        ("locations", LOCATIONS),
    ):
        route = ROUTE[table]
        pending = [Pending(i, route.rows(r)) for i, r in enumerate(records)]
        assert sink.load(route.table, route.columns, f"fixture-{table}", 0, pending) == []
    rows = [
        Pending(i, ENRICHED_ROUTE.outputs(r, None)["geofence_transitions"]) for i, r in enumerate(GEOFENCE)
    ]
    assert (
        sink.load("geofence_transitions", COLUMNS["geofence_transitions"], "fixture-enriched", 0, rows) == []
    )
    merge = [Pending(0, ENRICHED_ROUTE.outputs(MERGE, None)["identity_merges"])]
    assert sink.load("identity_merges", COLUMNS["identity_merges"], "fixture-merges", 0, merge) == []
    client.command("SYSTEM RELOAD DICTIONARY person_merges")  # it reloads every 1-5 s by itself
    yield client
    client.close()


def rows(client, name: str, **filters) -> list[tuple]:
    result = run_report(client, name, **filters)
    return [tuple(row) for row in result.to_json()["rows"]]


@pytest.mark.integration
class TestReports:
    def test_tags_per_day(self, client):
        """Hits and distinct persons per tag per day; alice's two hits on the 16th count once as a person."""
        assert rows(client, "tags") == [
            ("2026-11-16", "favourite_team", 3, 2),
            ("2026-11-17", "newsletter", 1, 1),
            ("2026-11-24", "favourite_team", 1, 1),
        ]

    def test_tags_filtered_by_app_and_time(self, client):
        """--app keeps one app's records; --since/--until keep a half-open time window."""
        assert rows(client, "tags", app="ios") == [("2026-11-16", "favourite_team", 2, 1)]
        assert rows(client, "tags", since=at(17, 0), until=at(24, 12)) == [("2026-11-17", "newsletter", 1, 1)]

    def test_tag_values(self, client):
        """Per tag, each value's hits and persons, most hit first; a valueless tag shows ''."""
        assert rows(client, "tag_values") == [
            ("favourite_team", "Reds", 3, 2),
            ("favourite_team", "Blues", 1, 1),
            ("newsletter", "", 1, 1),
        ]

    def test_person_tags_by_any_identifier_and_search(self, client):
        """A person's tags, newest first, found by a raw identifier; search matches names and values."""
        found = rows(client, "person_tags", person="alice")
        assert [(r[0][:19], r[1], r[2], r[3]) for r in found] == [
            ("2026-11-16T10:05:00", "ios", "favourite_team", "Reds"),
            ("2026-11-16T10:00:00", "ios", "favourite_team", "Reds"),
        ]
        assert [r[3] for r in rows(client, "person_tags", search="blue")] == ["Blues"]
        assert [r[2] for r in rows(client, "person_tags", person="install_id:dev-bob", search="NEWS")] == [
            "newsletter"
        ]

    def test_campaign_funnel(self, client):
        """Sends per stage counted once each, rates against the previous stage, and failures."""
        assert rows(client, "campaigns") == [
            # 5 sent, 4 delivered (not s4), 2 opened (s1, s2), 1 clicked (s1 twice), s4 bounced
            # (every receipt is alice's: 1 person reached)
            ("bf", "email", 5, 4, 2, 1, 0.8, 0.5, 0.25, 1, 1, 1, 1),
            # s7 undelivered counts as a bounce
            ("bf", "sms", 2, 1, 0, 0, 0.5, 0.0, 0.0, 1, 0, 0, 1),
            ("promo", "push", 1, 1, 1, 1, 1.0, 1.0, 1.0, 0, 0, 0, 1),
        ]

    def test_active_users(self, client):
        """DAU per day; WAU over the 7 days and MAU over the 30 days ending that day."""
        assert rows(client, "active_users") == [
            ("2026-11-16", 2, 2, 2),  # alice, bob
            ("2026-11-17", 3, 4, 4),  # bob, dan, erin; week adds alice
            ("2026-11-23", 1, 4, 4),  # alice; 17th..23rd: bob, dan, erin, alice
            ("2026-11-24", 1, 2, 5),  # carol; 18th..24th: alice, carol
        ]

    def test_session_lengths(self, client):
        """Activity less than 30 minutes apart is one session; sessions are bucketed by length."""
        assert rows(client, "session_lengths") == [
            ("0-1m", 5, 0.0),  # alice 23rd, bob 17th, dan, erin, carol
            ("1-5m", 1, 60.0),  # bob 10:59 install -> 11:00 tag
            ("15-30m", 1, 1200.0),  # alice 10:00 -> 10:05 -> 10:20
        ]

    def test_recency_frequency(self, client):
        """Days from the last activity to the --until day, crossed with the number of active days."""
        assert rows(client, "recency_frequency", until=at(25, 0)) == [
            ("0-1d", "1 day", 1),  # carol: 24th, 1 day
            ("2-7d", "2-3 days", 1),  # alice: 23rd, 16th and 23rd
            ("8-30d", "1 day", 2),  # dan, erin: 17th
            ("8-30d", "2-3 days", 1),  # bob: 16th and 17th
        ]

    def test_locations(self, client):
        """Entries, exits, visitors and mean enter→exit dwell per location per day; GPS is no visit."""
        assert rows(client, "locations") == [
            ("2026-11-16", "store-1", 2, 2, 2, 1200.0),  # (1800 + 600) / 2
            ("2026-11-16", "store-2", 1, 0, 1, None),
            ("2026-11-17", "store-1", 1, 1, 1, 900.0),
            # frank twice, from geofence_transitions: before and after his merge, one visitor
            ("2026-11-18", "store-3", 2, 2, 1, 900.0),
        ]

    def test_locations_with_an_app_filter_keep_only_app_stamped_visits(self, client):
        """Enricher transitions carry no app: --app keeps the device-reported ones of that app."""
        assert rows(client, "locations", app="web") == []
        assert [r[1] for r in rows(client, "locations", app="")] == [
            "store-1",
            "store-2",
            "store-1",
            "store-3",
        ]

    def test_installs_by_attribution_source(self, client):
        """Installs grouped by campaign_source, else utm_source, else organic."""
        assert rows(client, "installs") == [
            ("facebook", 1, 1, 1),
            ("newsletter", 1, 1, 1),
            ("organic", 1, 1, 1),
        ]

    def test_retention_by_first_seen_week(self, client):
        """Cohort of the week of the 16th: 4 persons, alice back a week later; carol's cohort is the 23rd."""
        assert rows(client, "retention") == [
            ("2026-11-16", 0, 4, 1.0),
            ("2026-11-16", 1, 1, 0.25),
            ("2026-11-23", 0, 1, 1.0),
        ]

    def test_unknown_report_is_refused(self, client):
        """Asking for a report that does not exist names the ones that do."""
        with pytest.raises(ValueError, match="unknown report 'nope'; reports: tags"):
            run_report(client, "nope")

    def test_engine_refuses_writes_even_past_the_statement_check(self, client):
        """Queries run with readonly=1, so ClickHouse itself refuses a write."""
        with pytest.raises(QueryFailed, match="readonly"):
            execute(client, "INSERT INTO tags (message_id) VALUES ('x')")
