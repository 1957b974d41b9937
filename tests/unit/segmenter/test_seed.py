"""Seeding new segments of one partition: from ClickHouse (only this partition's persons), else from state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.client import Client

from services.common.clickhouse import connect
from services.segmenter.definitions import parse
from services.segmenter.engine import Engine
from services.segmenter.facts import Fact
from services.segmenter.index import Index
from services.segmenter.seed import seeder
from tests.unit.segmenter.history import DAY, NOW
from tests.unit.segmenter.test_oracle import create

VIP = parse({"id": "vip", "condition": {"tag": "vip"}})[0]
BUYERS = parse({"id": "buyers", "condition": {"event": "purchase", "within": "30d", "at_least": 2}})[0]


@pytest.fixture
def clickhouse(chdb_dsn: str) -> Iterator[Client]:
    client = connect(chdb_dsn)
    try:
        yield client
    finally:
        client.close()


def partition_engine() -> Engine:
    """An engine that has streamed ann's and bob's tags (its partition), before `buyers` existed."""
    engine = Engine(Index.build({"vip": VIP}))
    for person in ("ann", "bob"):
        engine.on_fact(Fact(person, NOW - DAY, "tag", "vip"), NOW - DAY)
    return engine


HISTORY = [
    Fact("ann", NOW - 5 * DAY, "event", "purchase"),
    Fact("ann", NOW - 2 * DAY, "event", "purchase"),
    Fact("bob", NOW - 2 * DAY, "event", "purchase"),
    Fact("cid", NOW - 3 * DAY, "event", "purchase"),  # another partition's person
    Fact("cid", NOW - 2 * DAY, "event", "purchase"),
]


class TestSeeder:
    def test_clickhouse_gives_members_and_state_of_this_partition_only(self, clickhouse: Client) -> None:
        """Members come from SQL but only for known persons; the rebuilt series keeps streaming exactly."""
        create(clickhouse, "seed", HISTORY)
        engine = partition_engine()
        reload = engine.reload({"vip": VIP, "buyers": BUYERS}, NOW)
        assert reload.needs_history == {"buyers"}
        changes = seeder(lambda: clickhouse, "seed")(engine, reload.needs_history, NOW)
        assert [(c.person_id, c.change) for c in changes] == [("ann", "entered")]
        assert "cid" not in engine.states
        # bob's second purchase completes his count only because his first one came from history.
        changes = engine.on_fact(Fact("bob", NOW + 1, "event", "purchase"), NOW + 1)
        assert [(c.person_id, c.segment_id, c.change) for c in changes] == [("bob", "buyers", "entered")]

    def test_without_clickhouse_tables_it_seeds_from_state(self, clickhouse: Client) -> None:
        """A failing ClickHouse (no tables) falls back to evaluating what the state holds."""
        engine = partition_engine()
        reload = engine.reload({"vip": VIP, "buyers": BUYERS}, NOW)
        assert seeder(lambda: clickhouse, "missing")(engine, reload.needs_history, NOW) == []
        assert "buyers" not in engine.pending
        engine.on_fact(Fact("bob", NOW + 1, "event", "purchase"), NOW + 1)
        changes = engine.on_fact(Fact("bob", NOW + 2, "event", "purchase"), NOW + 2)
        assert [(c.person_id, c.change) for c in changes] == [("bob", "entered")]
