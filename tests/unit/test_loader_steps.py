"""Pure steps of the loader: record → row, batch cutting, the read-only guard, error texts."""

from datetime import UTC, datetime

import pytest
from confluent_kafka import KafkaError, Message

from services.loader.analytics import QueryRefused, check_read_only
from services.loader.batcher import Batcher, Item
from services.loader.main import runs
from services.loader.rows import ROUTES, ConversionError, identity_key
from services.loader.sink import clickhouse_reason

ROUTE = {route.table: route for route in ROUTES}
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def tag(**overrides):
    record = {
        "message_id": "m1",
        "event_time": T0,
        "received_time": None,
        "source": "api",
        "app_id": "ios",
        "backfill": False,
        "identity": {"install_id": "dev-1", "external_user_id": "u-1", "email": None},
        "context": {"platform": "ios"},
        "name": "team",
        "value": "Reds",
    }
    return record | overrides


class TestIdentityKey:
    def test_prefers_the_device_then_the_user(self):
        """The key names the strongest identifier present, in partition-key order."""
        assert identity_key({"install_id": "d", "external_user_id": "u"}) == "install_id:d"
        assert identity_key({"install_id": None, "email": "a@b.c"}) == "email:a@b.c"

    def test_empty_identity_has_an_empty_key(self):
        """A record without identifiers still converts, with an empty key."""
        assert identity_key({}) == ""


class TestRows:
    def test_a_tag_becomes_one_row_in_column_order(self):
        """Every column of the tags route gets the matching field of the record."""
        route = ROUTE["tags"]
        (row,) = route.rows(tag())
        values = dict(zip(route.columns, row, strict=True))
        assert values["message_id"] == "m1"
        assert values["event_time"] == T0
        assert values["app_id"] == "ios"
        assert values["identity_key"] == "install_id:dev-1"
        assert values["external_user_id"] == "u-1"
        assert values["person_id"] is None
        assert (values["name"], values["value"]) == ("team", "Reds")

    def test_missing_required_field_is_a_conversion_error(self):
        """A record without its name cannot load and says which field is missing."""
        record = tag()
        del record["name"]
        with pytest.raises(ConversionError, match="name"):
            ROUTE["tags"].rows(record)

    def test_a_receipt_without_send_id_counts_as_its_own_send(self):
        """Funnels count sends; a receipt with no send_id stands for one send."""
        route = ROUTE["message_events"]
        record = tag(channel="sms", status="sent", campaign_id=None, send_id=None) | {"identity": {}}
        values = dict(zip(route.columns, route.rows(record)[0], strict=True))
        assert values["send_id"] == "m1"
        assert values["campaign_id"] == ""

    def test_profile_update_attributes_become_parallel_arrays(self):
        """Names, types, values and scopes stay aligned by position."""
        route = ROUTE["profile_updates"]
        attributes = [
            {"name": "plan", "type": "string", "value": "gold", "scope": "person"},
            {"name": "dark", "type": "boolean", "value": None, "scope": "device"},
        ]
        record = tag(action="update", previous_id=None, attributes=attributes, device=None)
        values = dict(zip(route.columns, route.rows(record)[0], strict=True))
        assert values["attribute_names"] == ["plan", "dark"]
        assert values["attribute_values"] == ["gold", None]
        assert values["attribute_scopes"] == ["person", "device"]
        assert values["device_platform"] == ""


class TestBatcher:
    def test_flushes_at_the_row_limit_with_a_fixed_range(self):
        """Reaching N rows cuts a batch of exactly N; the rest waits for the next one."""
        batcher = Batcher(flush_seconds=60, flush_rows=3)
        for offset in range(5):
            batcher.add("t", 0, Item(offset, None, b""), now=0.0)
        (batch,) = batcher.due(now=1.0)
        assert (batch.first, batch.last, batch.token) == (0, 2, "t:0:0-2")
        assert batcher.due(now=1.0) == []
        assert len(batcher) == 2

    def test_flushes_when_the_oldest_record_is_old_enough(self):
        """A partition's batch flushes flush_seconds after its first record, whatever its size."""
        batcher = Batcher(flush_seconds=5, flush_rows=100)
        batcher.add("t", 1, Item(7, None, b""), now=0.0)
        assert batcher.due(now=4.9) == []
        (batch,) = batcher.due(now=5.0)
        assert batch.token == "t:1:7-7"

    def test_partitions_batch_separately(self):
        """Records of two partitions never share a batch."""
        batcher = Batcher(flush_seconds=1, flush_rows=100)
        batcher.add("t", 0, Item(0, None, b""), now=0.0)
        batcher.add("t", 1, Item(0, None, b""), now=0.0)
        assert sorted(b.token for b in batcher.due(now=2.0)) == ["t:0:0-0", "t:1:0-0"]

    def test_a_replay_boundary_cuts_the_same_range_as_before_the_crash(self):
        """After a restart the first batch ends where the crashed one ended, even with more records."""
        batcher = Batcher(flush_seconds=60, flush_rows=100)
        for offset in range(10, 20):
            batcher.add("t", 0, Item(offset, None, b""), now=0.0)
        batcher.set_boundaries("t", 0, [13])
        (batch,) = batcher.due(now=0.0)
        assert batch.token == "t:0:10-13"
        assert len(batcher) == 6

    def test_two_replay_boundaries_cut_both_ranges_then_batching_resumes(self):
        """A crash while a round committed left the next round's intent too: both ranges are cut
        as before (offset 16 is a transaction marker: the second range starts at 17), then
        records batch by size again."""
        batcher = Batcher(flush_seconds=60, flush_rows=3)
        for offset in [*range(10, 16), *range(17, 25)]:
            batcher.add("t", 0, Item(offset, None, b""), now=0.0)
        batcher.set_boundaries("t", 0, [13, 20])
        assert [b.token for b in batcher.due(now=0.0)] == ["t:0:10-13"]
        assert [b.token for b in batcher.due(now=0.0)] == ["t:0:14-20"]
        assert [b.token for b in batcher.due(now=0.0)] == ["t:0:21-23"]
        assert [b.token for b in batcher.drain(now=0.0)] == ["t:0:24-24"]

    def test_a_boundary_waits_for_its_last_offset(self):
        """Until the boundary's last offset arrives the batch is not cut, however old it is: cut
        short it would get another token and its rows would load twice."""
        batcher = Batcher(flush_seconds=60, flush_rows=100)
        batcher.add("t", 0, Item(10, None, b""), now=0.0)
        batcher.set_boundaries("t", 0, [12])
        assert batcher.due(now=1.0) == []
        assert batcher.due(now=120.0) == []
        batcher.add("t", 0, Item(11, None, b""), now=1.0)
        batcher.add("t", 0, Item(12, None, b""), now=1.0)
        assert [b.token for b in batcher.due(now=1.0)] == ["t:0:10-12"]

    def test_half_full_or_half_old_partitions_ride_along_with_a_due_one(self):
        """One round for partitions filling at the same pace: when a batch is due, those past half
        their rows or half their age go with it; the rest, and a pinned replay, keep waiting."""
        batcher = Batcher(flush_seconds=60, flush_rows=10)
        for partition, count in ((0, 10), (1, 5), (2, 4), (3, 6)):
            for offset in range(count):
                batcher.add("t", partition, Item(offset, None, b""), now=0.0)
        batcher.set_boundaries("t", 3, [8])  # half full, but its cut is pinned at offset 8
        batcher.add("t", 4, Item(0, None, b""), now=-31.0)  # past half the window
        assert sorted(b.token for b in batcher.due(now=0.0)) == ["t:0:0-9", "t:1:0-4", "t:4:0-0"]
        assert len(batcher) == 10  # partition 2's four records, partition 3's six

    def test_has_due_says_whether_due_would_return_a_batch(self):
        batcher = Batcher(flush_seconds=5, flush_rows=3)
        batcher.add("t", 0, Item(0, None, b""), now=0.0)
        assert not batcher.has_due(now=1.0)
        assert batcher.has_due(now=5.0)  # old enough
        batcher.add("t", 1, Item(0, None, b""), now=1.0)
        batcher.add("t", 1, Item(1, None, b""), now=1.0)
        batcher.add("t", 1, Item(2, None, b""), now=1.0)
        assert batcher.has_due(now=1.0)  # big enough
        assert [b.token for b in batcher.due(now=1.0)] == ["t:1:0-2"]
        assert not batcher.has_due(now=1.0)

    def test_shutdown_leaves_a_replay_short_of_its_boundary_for_the_next_run(self):
        """SIGTERM while a replayed range is still arriving: the partial range is not written
        (another token), the others are."""
        batcher = Batcher(flush_seconds=60, flush_rows=100)
        batcher.add("t", 0, Item(10, None, b""), now=0.0)
        batcher.set_boundaries("t", 0, [12])
        batcher.add("t", 1, Item(3, None, b""), now=0.0)
        assert [b.token for b in batcher.drain(now=1.0)] == ["t:1:3-3"]
        assert len(batcher) == 0

    def test_revoked_partitions_are_forgotten(self):
        """Buffers of a revoked partition are dropped, to be replayed by the next owner."""
        batcher = Batcher(flush_seconds=1, flush_rows=100)
        batcher.add("t", 0, Item(0, None, b""), now=0.0)
        batcher.drop([("t", 0)])
        assert batcher.drain(now=5.0) == []


class TestConsumedRuns:
    def test_messages_become_columns_per_run_of_one_partition_in_order(self):
        """Interleaved partitions and topics: each run keeps its messages' order; errors are left out."""
        eof = Message(topic="a", partition=0, error=KafkaError(KafkaError._PARTITION_EOF))
        spec = [("a", 0, 1), ("a", 0, 2), ("a", 1, 7), ("b", 1, 3), ("b", 1, 4), ("a", 0, 3)]
        messages = [
            Message(topic=t, partition=p, offset=o, key=b"k%d" % o, value=b"v%d" % o) for t, p, o in spec
        ]
        messages.insert(2, eof)
        assert list(runs(messages)) == [
            ("a", 0, [1, 2], [b"k1", b"k2"], [b"v1", b"v2"]),
            ("a", 1, [7], [b"k7"], [b"v7"]),
            ("b", 1, [3, 4], [b"k3", b"k4"], [b"v3", b"v4"]),
            ("a", 0, [3], [b"k3"], [b"v3"]),
        ]
        assert list(runs([])) == []
        assert list(runs([eof])) == []


class TestReadOnlyGuard:
    @pytest.mark.parametrize(
        "sql",
        [
            "SELECT 1",
            "  with x AS (SELECT 1) SELECT * FROM x;",
            "-- comment\nSHOW TABLES",
            "DESCRIBE TABLE tags",
            "SELECT ';' AS semicolon",
        ],
    )
    def test_reads_pass(self, sql):
        """Single read statements pass, with comments, a trailing ';' or ';' inside a string."""
        assert check_read_only(sql)

    @pytest.mark.parametrize(
        ("sql", "message"),
        [
            ("INSERT INTO tags VALUES (1)", "INSERT statements are refused"),
            ("alter table tags delete where 1", "ALTER statements are refused"),
            ("DROP TABLE tags", "DROP statements are refused"),
            ("/* hi */ TRUNCATE tags", "TRUNCATE statements are refused"),
            ("SELECT 1; DROP TABLE tags", "one statement at a time"),
            ("SELECT * FROM file('/etc/passwd')", "file is not allowed"),
            ("SELECT 1 INTO OUTFILE 'x'", "INTO OUTFILE"),
            ("", "empty statement"),
        ],
    )
    def test_writes_are_refused_with_a_clear_message(self, sql, message):
        """Writes, several statements, files and empty input are refused, saying why."""
        with pytest.raises(QueryRefused, match=message):
            check_read_only(sql)


class TestClickHouseReason:
    def test_quoted_values_are_cut(self):
        """The dead-letter reason keeps ClickHouse's explanation but not the offending value."""
        error = Exception("Code: 469. Constraint `lat` is violated at row 1. Column values: latitude = 123.")
        assert clickhouse_reason(error) == "Code: 469. Constraint `lat` is violated at row 1."
