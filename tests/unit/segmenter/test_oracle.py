"""The correctness oracle: streaming membership equals ClickHouse SQL membership over the same facts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.client import Client

from services.common.clickhouse import connect
from services.segmenter.backfill import seed_from_clickhouse
from services.segmenter.definitions import Segment, parse
from services.segmenter.engine import Engine
from services.segmenter.evaluate import evaluate
from services.segmenter.facts import Fact
from services.segmenter.index import Index
from services.segmenter.sql import TABLES, columns_sql, compile_segment, persons_sql
from tests.unit.segmenter.history import DAY, HOUR, NOW, generate, oracle_segments, rows

SEGMENTS = oracle_segments()
# Reference times after the stream drained: right away, on and just past window edges, and later on
# with no new facts, which only timers can get right.
REFERENCE_TIMES = (NOW, NOW + 1, NOW + HOUR, NOW + DAY + 1, NOW + 3 * DAY, NOW + 40 * DAY, NOW + 200 * DAY)


@pytest.fixture
def clickhouse(chdb_dsn: str) -> Iterator[Client]:
    client = connect(chdb_dsn)
    try:
        yield client
    finally:
        client.close()


def create(client: Client, database: str, facts: list[Fact]) -> None:
    """The oracle's tables (docs/segments.md contract) in a new database, holding these facts."""
    client.command(f"CREATE DATABASE {database}")
    for table in TABLES:
        engine = "ENGINE = MergeTree ORDER BY person_id"
        client.command(f"CREATE TABLE {database}.{table} ({columns_sql(table)}) {engine}")
    insert(client, database, facts)


def insert(client: Client, database: str, facts: list[Fact]) -> None:
    for table, data in rows(facts).items():
        if data:
            client.insert(f"{database}.{table}", data, column_names=[c for c, _ in TABLES[table]])


def load(client: Client, seed: int) -> Engine:
    """Load a seeded history into the oracle tables and stream the same facts through the engine."""
    arrivals = generate(seed)
    create(client, f"s{seed}", [a.fact for a in arrivals])
    engine = Engine(Index.build({s.id: s for s in SEGMENTS}))
    for arrival in arrivals:
        engine.on_fact(arrival.fact, arrival.at_ms)
    return engine


def sql_members(client: Client, segment: Segment, now_ms: int, seed: int) -> set[str]:
    return {row[0] for row in client.query(compile_segment(segment, now_ms, f"s{seed}")).result_rows}


@pytest.mark.integration
class TestOracle:
    @pytest.mark.parametrize("seed", [7, 2026])
    def test_streaming_and_pure_membership_equal_clickhouse_at_every_reference_time(
        self, clickhouse: Client, seed: int
    ) -> None:
        """For every segment and reference time, timer-driven streaming membership, pure evaluation of the
        streamed state and the compiled SQL over the loaded history name exactly the same persons."""
        engine = load(clickhouse, seed)
        mismatches = []
        for now in REFERENCE_TIMES:
            engine.advance(now)
            for segment in SEGMENTS:
                expected = sql_members(clickhouse, segment, now, seed)
                streamed = engine.member_ids(segment.id)
                pure = {p for p, state in engine.states.items() if evaluate(segment, state, now)}
                if not expected == streamed == pure:
                    mismatches.append((segment.id, now - NOW, expected ^ streamed, expected ^ pure))
        assert mismatches == []

    def test_the_history_makes_every_segment_discriminate(self, clickhouse: Client) -> None:
        """At the main reference time every segment has members and non-members: agreement is not vacuous."""
        load(clickhouse, 7)
        everyone = len(clickhouse.query(persons_sql("s7")).result_rows)
        trivial = [s.id for s in SEGMENTS if len(sql_members(clickhouse, s, NOW, 7)) in (0, everyone)]
        assert trivial == []


@pytest.mark.integration
class TestSqlCompiler:
    def test_names_and_values_with_quotes_and_backslashes_are_matched_literally(
        self, clickhouse: Client
    ) -> None:
        """Names, property keys and values with quotes or backslashes select exactly their rows."""
        odd = "it's a \\'test\\"
        facts = [
            Fact("a", NOW - 1, "event", odd, properties={odd: odd}),
            Fact("b", NOW - 1, "event", odd, properties={odd: "it's"}),
            Fact("c", NOW - 1, "event", "its", properties={odd: odd}),
            Fact("d", NOW - 1, "tag", odd, value=odd),
        ]
        defs = parse({"segments": [
            {"id": "ev", "condition": {"event": odd, "where": [{"property": odd, "equals": odd}]}},
            {"id": "contains", "condition": {"event": odd, "where": [{"property": odd, "contains": "'s"}]}},
            {"id": "tag", "condition": {"tag": odd, "value": odd}},
        ]})  # fmt: skip
        client = clickhouse
        create(client, "odd", facts)
        engine = Engine(Index.build({s.id: s for s in defs}))
        for fact in facts:
            engine.on_fact(fact, NOW)
        found = {s.id: {r[0] for r in client.query(compile_segment(s, NOW, "odd")).result_rows} for s in defs}
        assert found == {"ev": {"a"}, "contains": {"a", "b"}, "tag": {"d"}}
        assert found == {s.id: engine.member_ids(s.id) for s in defs}

    def test_strings_are_dates_on_both_sides_or_on_neither(self, clickhouse: Client) -> None:
        """Valid and near-valid date strings (hour 24, 30 February, year 0) get the same verdict in SQL."""
        values = ["2024-02-29", "2023-02-29", "2024-04-31", "2024-12-31T23:59:59.9Z", "2024-12-31T24:00:00Z",
                  "2024-06-15T12:00:60Z", "0000-01-01", "1899-12-31", "1900-01-01", "2300-01-01",
                  "2299-12-31T23:59:59.999Z", "2024-1-5", "2024-01-05 10:00:00", "20240105", ""]  # fmt: skip
        facts = [Fact(f"p{i:02d}", NOW, "attribute", "d", value=v) for i, v in enumerate(values)]
        defs = parse({"segments": [
            {"id": "before", "condition": {"attribute": "d", "before": "2024-06-01"}},
            {"id": "after", "condition": {"attribute": "d", "after": "2024-06-01"}},
        ]})  # fmt: skip
        create(clickhouse, "dates", facts)
        engine = Engine(Index.build({s.id: s for s in defs}))
        for fact in facts:
            engine.on_fact(fact, NOW)
        found = {
            s.id: {r[0] for r in clickhouse.query(compile_segment(s, NOW, "dates")).result_rows} for s in defs
        }
        assert found == {s.id: engine.member_ids(s.id) for s in defs}
        assert len(found["before"]) + len(found["after"]) == 4  # the valid ones, each on one side

    def test_json_numbers_get_the_same_verdict_in_sql(self, clickhouse: Client) -> None:
        """Integers, floats, 64-bit edges and beyond, booleans and numeric strings compare alike in SQL."""
        values = [500, 500.0, 1e3, -0.0, 2**63, 2**64 + 1, -(2**63), 9007199254740993, "500", True, None,
                  1e308, 0.1, {"a": 1}, [1, 2], 499.99999999999994]  # fmt: skip
        facts = [Fact(f"p{i:02d}", NOW, "event", "E", properties={"x": v}) for i, v in enumerate(values)]
        tests = [{"gt": 499.99999999999994}, {"equals": 500}, {"equals": 9007199254740992}, {"exists": True},
                 {"equals": True}, {"in": ["500", "a"]}, {"lte": 0}]  # fmt: skip
        defs = parse({"segments": [
            {"id": f"t{i}", "condition": {"event": "E", "where": [{"property": "x", **test}]}}
            for i, test in enumerate(tests)
        ] + [{"id": "sum", "condition": {"event": "E", "sum": {"property": "x", "gt": 0}}}]})  # fmt: skip
        create(clickhouse, "numbers", facts)
        engine = Engine(Index.build({s.id: s for s in defs}))
        for fact in facts:
            engine.on_fact(fact, NOW)
        found = {
            s.id: {r[0] for r in clickhouse.query(compile_segment(s, NOW, "numbers")).result_rows}
            for s in defs
        }
        assert found == {s.id: engine.member_ids(s.id) for s in defs}
        assert found["t1"] == {"p00", "p01"}  # 500 and 500.0, not "500" or true


@pytest.mark.integration
class TestSeedFromHistory:
    def test_segments_added_mid_stream_and_seeded_from_clickhouse_then_stream_exactly(
        self, clickhouse: Client
    ) -> None:
        """Start with two segments, add all others halfway (seeded from the loaded history), finish the
        stream: every segment then agrees with SQL over the whole history at every reference time."""
        arrivals = generate(11)
        half = len(arrivals) // 2
        cut = arrivals[half].at_ms
        first = {s.id: s for s in SEGMENTS if s.id in ("active-7d", "heavy-users")}
        engine = Engine(Index.build(first))
        for arrival in arrivals[:half]:
            engine.on_fact(arrival.fact, arrival.at_ms)
        create(clickhouse, "seed", [a.fact for a in arrivals[:half]])  # what the segmenter has applied
        result = engine.reload({s.id: s for s in SEGMENTS}, cut)
        assert len(result.needs_history) > 30
        seed_from_clickhouse(engine, result.needs_history, clickhouse, cut, "seed")
        assert engine.pending == set()
        for arrival in arrivals[half:]:
            engine.on_fact(arrival.fact, arrival.at_ms)
        insert(clickhouse, "seed", [a.fact for a in arrivals[half:]])
        mismatches = []
        for now in REFERENCE_TIMES:
            engine.advance(now)
            for segment in SEGMENTS:
                expected = {r[0] for r in clickhouse.query(compile_segment(segment, now, "seed")).result_rows}
                if expected != engine.member_ids(segment.id):
                    mismatches.append((segment.id, now - NOW, expected ^ engine.member_ids(segment.id)))
        assert mismatches == []
