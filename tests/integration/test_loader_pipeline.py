"""ingest's output → the real enricher (the demo's geofence catalogue) → the real loader: the
``locations`` report shows the visit a GPS walk makes (what ``make run`` printed empty), and every
loaded row carries the person the enricher resolved."""

from __future__ import annotations

import httpx
import pytest

from services.common.settings import REPO_ROOT
from tests.enricher_records import T0, event, gps, tag
from tests.helpers import wait_until
from tests.integration.enricher_harness import Enricher, Topics
from tests.integration.test_loader import LoaderProcess

STORE = (53.3498, -6.2603)  # store-dublin, radius 150 m (config/geofences.example.json)
MINUTE = 60_000
# The generator's walk: latitude offsets every 5 minutes; inside (≤ 150 m) from the 3rd to the 5th
# point, out again (beyond the 50 m hysteresis) at the 6th.
WALK = (0.01, 0.003, 0.0005, 0.0002, 0.0004, 0.004, 0.012)


@pytest.fixture
def pipeline(settings, env, tmp_path):
    enricher = Enricher(
        settings,
        tmp_path / "enricher.log",
        TAGSTREAM_ENRICHER_GEOFENCE_FILE=str(REPO_ROOT / "config" / "geofences.example.json"),
    ).start()
    loader = LoaderProcess(env, tmp_path / "loader.log", TAGSTREAM_LOADER_SOURCE="enriched")
    topics = Topics(settings)
    yield topics, loader.wait_ready()
    topics.close()
    loader.stop()
    enricher.stop()


@pytest.mark.integration
def test_a_gps_walk_becomes_a_location_visit_in_the_report(pipeline):
    """GPS points around store-dublin load as points, the enricher's entered/dwelled/exited load as
    transitions, and the locations report counts one entry, one exit, one visitor, 15 minutes."""
    topics, loader = pipeline
    ids = {"install_id": "walker-1", "external_user_id": "user-1"}
    topics.send("tag_hit", tag("w-tag", T0, "journeyform_destination", "Dublin", **ids))
    topics.send("event", event("w-launch", T0 + 1, kind="app_launch", name="app_launch", **ids))
    for step, offset in enumerate(WALK):
        topics.send(
            "location", gps(f"w-gps-{step}", T0 + step * 5 * MINUTE, STORE[0] + offset, STORE[1], **ids)
        )

    def transitions() -> list[list]:
        return loader.query("SELECT kind, region_id FROM geofence_transitions ORDER BY event_time")

    wait_until(lambda: len(transitions()) == 3, timeout=120, what="the enricher's transitions loaded")
    assert transitions() == [
        ["entered", "store-dublin"],
        ["dwelled", "store-dublin"],
        ["exited", "store-dublin"],
    ]
    wait_until(
        lambda: loader.query("SELECT count() FROM locations")[0][0] == len(WALK), timeout=60, what="points"
    )
    persons = loader.query(
        "SELECT uniqExact(person_id), countIf(person_id IS NULL) FROM "
        "(SELECT person_id FROM tags UNION ALL SELECT person_id FROM events "
        "UNION ALL SELECT person_id FROM locations UNION ALL SELECT person_id FROM geofence_transitions)"
    )
    assert persons == [[1, 0]]  # one person, resolved on every row
    report = httpx.get(f"{loader.url}/reports/locations", timeout=30).json()
    rows = [dict(zip(report["columns"], row, strict=True)) for row in report["rows"]]
    assert [
        (r["location"], r["entries"], r["exits"], r["visitors"], r["avg_dwell_seconds"]) for r in rows
    ] == [
        ("store-dublin", 1, 1, 1, 900.0)  # entered at the 3rd point, exited at the 6th
    ]
