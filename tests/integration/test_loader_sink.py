"""The ClickHouse sink on the real engine (chDB): deduplicated retries and isolating refused rows."""

from datetime import UTC, datetime
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from services.common.clickhouse import connect
from services.loader import ddl
from services.loader.rows import ROUTES
from services.loader.sink import ClickHouseSink, Pending

LOCATIONS = next(r for r in ROUTES if r.table == "locations")


def location(n: int, latitude: float) -> Pending:
    record = {
        "message_id": f"loc-{n}",
        "event_time": datetime(2026, 11, 20, 11, n, tzinfo=UTC),
        "identity": {"install_id": "dev-1"},
        "kind": "gps",
        "latitude": latitude,
        "longitude": -6.26,
    }
    return Pending(100 + n, LOCATIONS.rows(record))


class Flaky:
    """The real client whose next ``failures`` inserts fail as a busy server's would."""

    def __init__(self, client: Any, failures: int) -> None:
        self.client, self.failures = client, failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise DatabaseError("Code: 252. DB::Exception: Too many parts (fault injection)")
        return self.client.insert(*args, **kwargs)


@pytest.fixture
def sink(chdb_dsn):
    client = connect(chdb_dsn)
    ddl.apply(client)
    yield ClickHouseSink(client)
    client.close()


def count(sink: ClickHouseSink) -> int:
    return sink.client.query("SELECT count() FROM locations").result_rows[0][0]


@pytest.mark.integration
class TestClickHouseSink:
    def test_a_retried_batch_is_stored_once(self, sink):
        """The same offset range inserted twice (a crash before the commit) leaves one copy."""
        batch = [location(n, 53.0) for n in range(5)]
        for _ in range(2):
            assert sink.load(LOCATIONS.table, LOCATIONS.columns, "locations.valid", 3, batch) == []
        assert count(sink) == 5

    def test_a_refused_row_is_isolated_and_the_rest_loads_once_even_when_retried(self, sink):
        """One impossible latitude is rejected with ClickHouse's reason; its neighbours load, and a
        replay of the whole batch (same tokens for the same halves) adds nothing."""
        batch = [location(n, 123.0 if n == 3 else 53.0) for n in range(7)]
        for _ in range(2):
            (rejected,) = sink.load(LOCATIONS.table, LOCATIONS.columns, "locations.valid", 0, batch)
            assert rejected.offset == 103
            assert "latitude_range" in rejected.message
            assert "123" not in rejected.message  # the offending value is not echoed
        assert count(sink) == 6

    def test_an_error_that_passes_parks_no_record(self, sink):
        """ClickHouse refuses three inserts in a row for a reason that passes (not the data): the
        batch, its first half and that half's first record. The record's retry loads it: a valid
        record is never dead-lettered for an error that does not repeat."""
        flaky = Flaky(sink.client, failures=3)
        batch = [location(n, 53.0) for n in range(4)]
        refused = ClickHouseSink(flaky).load(LOCATIONS.table, LOCATIONS.columns, "locations.valid", 4, batch)
        assert refused == []
        assert count(sink) == 4 and flaky.failures == 0

    def test_the_replay_boundary_is_the_last_recorded_intent(self, sink):
        """The intent log answers where a batch that started at an offset ended."""
        sink.record_intent("tags.valid", 2, 10, 19)
        assert sink.pending_boundary("tags.valid", 2, 10) == 19
        assert sink.pending_boundary("tags.valid", 2, 20) is None
        assert sink.pending_boundary("tags.valid", 1, 10) is None

    def test_intents_recorded_together_each_give_their_boundary(self, sink):
        """Batches due at once record their intents in one statement; each range is found."""
        sink.record_intents([("tags.valid", 0, 0, 9), ("tags.valid", 1, 5, 7), ("events.valid", 0, 0, 3)])
        assert sink.pending_boundary("tags.valid", 0, 0) == 9
        assert sink.pending_boundary("tags.valid", 1, 5) == 7
        assert sink.pending_boundary("events.valid", 0, 0) == 3

    def test_boundaries_of_many_partitions_come_from_one_lookup(self, sink):
        """A loader given many partitions asks for all their boundaries at once: each partition
        gets the latest intent starting at its first offset, and none where no intent starts."""
        sink.record_intents([("tags.valid", 0, 0, 9), ("tags.valid", 1, 5, 7), ("events.valid", 0, 0, 3)])
        sink.record_intents([("tags.valid", 0, 0, 12)])  # cut again later: the latest one counts
        starts = [("tags.valid", 0, 0), ("tags.valid", 1, 5), ("events.valid", 0, 4), ("events.valid", 1, 0)]
        assert sink.pending_boundaries(starts) == {("tags.valid", 0): [12], ("tags.valid", 1): [7]}

    def test_a_crash_while_committing_leaves_two_ranges_both_found_in_order(self, sink):
        """The next round's intent is written while the previous round commits: the boundaries
        follow from the first offset, batch after batch (17 follows 12 across a transaction
        marker); an intent before the first offset, or not following on, is no boundary."""
        sink.record_intents([("tags.valid", 0, 0, 4), ("tags.valid", 0, 5, 12), ("tags.valid", 1, 0, 9)])
        sink.record_intents([("tags.valid", 0, 14, 20)])
        starts = [("tags.valid", 0, 5), ("tags.valid", 1, 3)]
        assert sink.pending_boundaries(starts) == {("tags.valid", 0): [12, 20]}
