"""Seed segments that need history: members from the SQL oracle, state from facts read back.

After ``Engine.reload`` returns ``needs_history``, :func:`seed_from_clickhouse` asks ClickHouse for
each pending segment's members at ``now`` (``sql.compile_segment``), reads back the facts those
segments select (``history_queries``), rebuilds exactly the state they read — their series,
attributes, regions, position — by replaying those facts into a copy of each person's state, and
hands both to ``Engine.seed``. What the state already tracked for other segments is untouched.

Exactness needs the tables to hold exactly the facts the segmenter has applied (see
docs/segments.md, "New and changed segments"): the adapter restricts the history to rows below its
committed offsets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from clickhouse_connect.driver.client import Client

from services.segmenter.engine import Change, Engine
from services.segmenter.evaluate import apply
from services.segmenter.facts import Fact, PersonState
from services.segmenter.index import Index
from services.segmenter.sql import TABLES, compile_segment, quote

_TIME = {"profiles": "updated_at"}


def history_queries(index: Index, database: str | None = None) -> dict[str, str]:
    """Per table, a query for the rows this index reads (time as epoch ms first, then the columns)."""
    db = f"{database}." if database else ""
    wanted: dict[str, str] = {}
    names = {
        kind: sorted({t[1] for t in index.by_touch if t[0] == kind}) for kind in ("event", "tag", "attribute")
    }
    for table, kind in (("events", "event"), ("tags", "tag"), ("profiles", "attribute")):
        if names[kind]:
            wanted[table] = f"name IN ({', '.join(quote(n) for n in names[kind])})"
    if any(t[0] == "message" for t in index.by_touch):
        wanted["message_events"] = "1"
    regions = sorted(t[1] for t in index.by_touch if t[0] == "region")
    if regions or index.position:
        in_regions = f"region_id IN ({', '.join(quote(r) for r in regions)})" if regions else "0"
        wanted["locations"] = f"{in_regions} OR (latitude IS NOT NULL AND longitude IS NOT NULL)"
    if ("session",) in index.by_touch:
        wanted["sessions"] = "1"
    queries = {}
    for table, where in wanted.items():
        columns = ", ".join(name for name, _ in TABLES[table])
        time = _TIME.get(table, "event_time")
        queries[table] = f"SELECT toUnixTimestamp64Milli({time}), {columns} FROM {db}{table} WHERE {where}"
    return queries


def to_fact(table: str, row: tuple[Any, ...]) -> Fact:
    """One table row (as ``history_queries`` selects it) back into the fact it was loaded from."""
    t, person = row[0], row[1]
    if table == "profiles":
        return Fact(person, t, "attribute", row[2], value=json.loads(row[3]))
    if table == "tags":
        return Fact(person, t, "tag", row[3], value=row[4])
    if table == "events":
        return Fact(person, t, "event", row[3], properties=json.loads(row[4]))
    if table == "message_events":
        return Fact(person, t, "message", row[5], channel=row[3], campaign=row[4])
    if table == "locations":
        return Fact(person, t, "location", row[3], region=row[4], lat=row[5], lon=row[6])
    return Fact(person, t, "session", "started")


def read_facts(client: Client, index: Index, database: str | None = None) -> Iterator[Fact]:
    for table, query in history_queries(index, database).items():
        for row in client.query(query).result_rows:
            yield to_fact(table, row)


def rebuild(
    states: dict[str, PersonState], needs: Index, facts: Iterable[Fact], now_ms: int
) -> dict[str, PersonState]:
    """States with everything ``needs`` reads replaced by what ``facts`` say (other parts kept)."""
    fresh: dict[str, PersonState] = {}
    for person, state in states.items():
        copy = state.copy()
        for name in needs.attributes:
            copy.attributes.pop(name, None)
        for region in needs.presence:
            copy.presence.pop(region, None)
        if needs.position:
            copy.position = None
        for key in needs.retention:
            copy.series.pop(key, None)
        fresh[person] = copy
    for fact in sorted(facts, key=lambda f: f.time_ms):
        fresh[fact.person_id] = apply(fact, fresh.get(fact.person_id, PersonState()), needs, now_ms)
    return fresh


def seed_from_clickhouse(engine: Engine, pending: Iterable[str], client: Client, now_ms: int,
                         database: str | None = None) -> list[Change]:  # fmt: skip
    pending = sorted(pending)
    if not pending:
        return []
    needs = engine.index.only(pending)
    states = rebuild(engine.states, needs, read_facts(client, needs, database), now_ms)
    changes: list[Change] = []
    for segment_id in pending:
        query = compile_segment(engine.index.segments[segment_id], now_ms, database)
        members = {row[0] for row in client.query(query).result_rows}
        changes += engine.seed(segment_id, members, states, now_ms)
    return changes
