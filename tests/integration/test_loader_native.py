"""The fast path (ClickHouse decodes a batch's Avro, native.py) gives exactly the Python path's rows,
honours the batch's deduplication token, and steps aside for anything it cannot take whole."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.common.clickhouse import connect
from services.common.serde import Serde
from services.loader import ddl
from services.loader.batcher import Item
from services.loader.enriched import ENRICHED_ROUTE
from services.loader.rows import COLUMNS, ROUTES, SOURCE_COLUMNS
from services.loader.sink import ClickHouseSink, Pending

SERDE = Serde()
ROUTE = {r.table: r for r in ROUTES}
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
IDENTITIES = [
    {"install_id": "dev-1", "anonymous_id": None, "external_user_id": "u-1", "email": None, "phone": None},
    {"install_id": "", "anonymous_id": None, "external_user_id": None, "email": "a@b.c", "phone": None},
    {"install_id": None, "anonymous_id": "anon", "external_user_id": None, "email": None, "phone": "+3531"},
    {"install_id": None, "anonymous_id": None, "external_user_id": None, "email": None, "phone": None},
]


def envelope(i: int) -> dict:
    return {
        "message_id": f"m-{i}",
        "event_time": T0 + timedelta(milliseconds=1001 * i),
        "received_time": None if i % 2 else T0,
        "source": "api",
        "app_id": None if i % 3 == 0 else ("ios", "")[i % 2],
        "backfill": i % 5 == 0,
        "identity": IDENTITIES[i % len(IDENTITIES)],
        "context": {} if i % 2 else {"platform": "ios", "campaign_source": "fb"},
    }


def records(table: str, n: int = 40) -> list[dict]:
    if table == "tags":
        return [envelope(i) | {"name": f"t{i % 3}", "value": f"v{i}" if i % 4 else None} for i in range(n)]
    kinds = ("custom", "app_launch", "install", "purchase")
    return [
        envelope(i) | {"name": f"e{i % 3}", "kind": kinds[i % 4], "properties": json.dumps({"revenue": i})}
        for i in range(n)
    ]


@pytest.fixture
def sink(chdb_dsn):
    client = connect(chdb_dsn)
    ddl.apply(client)
    yield ClickHouseSink(client)
    client.close()


def columns(items: list[Item]) -> tuple[list[int], list[bytes | None]]:
    """A batch as the loader hands it over: offsets and values."""
    return [i.offset for i in items], [i.value for i in items]


def rows(sink: ClickHouseSink, table: str, topic: str, first_offset: int) -> list[tuple]:
    """The rows loaded from ``topic``, without ``_topic``, offsets relative to the batch's first."""
    columns = ", ".join((*COLUMNS[table], *SOURCE_COLUMNS))
    result = sink.client.query(f"SELECT {columns} FROM {table} WHERE _topic = '{topic}' ORDER BY _offset")
    out = []
    for row in result.result_rows:
        flat = [tuple(sorted(v.items())) if isinstance(v, dict) else v for v in row]  # maps: comparable
        out.append((*flat[:-3], flat[-1] - first_offset))
    return out


@pytest.mark.integration
@pytest.mark.parametrize("table", ["tags", "events"])
def test_clickhouse_decoding_gives_the_python_paths_rows(sink, table):
    """Every column of every row, nulls and empty strings included, equals the Python conversion."""
    record_type = ROUTE[table].topic.record_type
    data = records(table)
    items = [Item(100 + i, None, SERDE.encode(record_type, r)) for i, r in enumerate(data)]
    assert sink.load_avro(table, COLUMNS[table], record_type, "native", 0, *columns(items))
    pending = [Pending(200 + i, ROUTE[table].rows(r)) for i, r in enumerate(data)]
    assert sink.load(table, COLUMNS[table], "python", 0, pending) == []
    native = rows(sink, table, "native", 100)
    assert len(native) == len(data)
    assert native == rows(sink, table, "python", 200)


@pytest.mark.integration
def test_a_replayed_batch_is_deduplicated_on_either_path(sink):
    """The same range again — fast path or Python path — adds nothing: the token is the range's."""
    data = records("tags", 10)
    items = [Item(i, None, SERDE.encode("tag_hit", r)) for i, r in enumerate(data)]
    assert sink.load_avro("tags", COLUMNS["tags"], "tag_hit", "t", 1, *columns(items))
    assert sink.load_avro("tags", COLUMNS["tags"], "tag_hit", "t", 1, *columns(items))
    pending = [Pending(i, ROUTE["tags"].rows(r)) for i, r in enumerate(data)]
    assert sink.load("tags", COLUMNS["tags"], "t", 1, pending) == []
    assert sink.client.query("SELECT count(), uniqExact(message_id) FROM tags").result_rows == [(10, 10)]


@pytest.mark.integration
def test_batches_it_cannot_take_whole_are_left_to_the_python_path(sink):
    """Undecodable or corrupt values, another record type or no route SQL: False, nothing inserted."""
    good = [Item(i, None, SERDE.encode("tag_hit", r)) for i, r in enumerate(records("tags", 5))]
    corrupt = good[4].value[:-3] + b"\xff\xff\xff"
    cases = [
        ("tags", "tag_hit", [*good[:4], Item(4, None, b"not avro at all")]),
        ("tags", "tag_hit", [*good[:4], Item(4, None, corrupt)]),
        ("tags", "event", good),  # tag_hit bytes on an event route
        ("locations", "location", [Item(0, None, SERDE.encode("location", envelope(0) | {"kind": "gps"}))]),
    ]
    for table, record_type, items in cases:
        assert not sink.load_avro(table, COLUMNS[table], record_type, "t", 0, *columns(items))
    assert sink.client.query("SELECT count() FROM tags").result_rows == [(0,)]
    assert sink.native_batches == 0


@pytest.mark.integration
@pytest.mark.parametrize("table", ["tags", "events"])
def test_enriched_originals_with_persons_give_the_python_paths_rows(sink, table):
    """Originals inside enriched envelopes, framed with their person: the same rows as converting
    the envelope in Python (enriched.py), person_id included."""
    record_type = ROUTE[table].topic.record_type
    data = records(table)
    originals = [SERDE.encode(record_type, r) for r in data]
    persons = [f"p-{i % 7}" for i in range(len(data))]
    items = [Item(100 + i, None, original) for i, original in enumerate(originals)]
    assert sink.load_avro(table, COLUMNS[table], record_type, "native", 0, *columns(items), persons)
    kind = "tag" if table == "tags" else "event"
    envelopes = [
        {"message_id": r["message_id"], "person_id": person, "device_id": None, "event_time": r["event_time"],
         "kind": kind, "record_type": record_type, "original": original, "details": {}}
        for r, person, original in zip(data, persons, originals, strict=True)
    ]  # fmt: skip
    outputs = [ENRICHED_ROUTE.outputs(env, SERDE.decode)[table] for env in envelopes]
    pending = [Pending(200 + i, rows_) for i, rows_ in enumerate(outputs)]
    assert sink.load(table, COLUMNS[table], "python", 0, pending) == []
    native = rows(sink, table, "native", 100)
    assert [row[COLUMNS[table].index("person_id")] for row in native] == persons
    assert native == rows(sink, table, "python", 200)
