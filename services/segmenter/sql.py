"""Compile a segment to one ClickHouse query returning its members at a reference time ``now``.

This is the correctness oracle (and the way a new or changed segment gets its initial membership
from loaded history). The table contract is in docs/segments.md; ``TABLES`` below is that DDL.
Every leaf becomes ``person_id IN (...)`` or ``person_id NOT IN (...)`` over the set of known
persons (anyone with a row in any table). A person with no matching rows has the "empty" measure;
whether the leaf holds on it is decided by the same Python code that streams (``evaluate.holds`` /
``predicates.test``), and picks IN (leaf needs rows) or NOT IN (leaf holds unless rows say
otherwise) — so ``never``, ``at_most`` and ``sum <= x`` include persons with no rows at all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.segmenter.conditions import (
    AllOf,
    AnyOf,
    AttributeCondition,
    EventCondition,
    InsideCondition,
    NearCondition,
    Not,
    Predicate,
    instant_ms,
)
from services.segmenter.definitions import Segment
from services.segmenter.evaluate import INSIDE_KINDS, Measure, holds
from services.segmenter.predicates import DATE_PATTERN, EARTH_RADIUS_KM, test
from services.segmenter.selectors import spec_for

_TIME = "DateTime64(3, 'UTC')"
TABLES: dict[str, tuple[tuple[str, str], ...]] = {  # table → (column, type); docs/segments.md explains each
    "profiles": (("person_id", "String"), ("name", "String"), ("value", "String"), ("updated_at", _TIME)),
    "tags": (
        ("person_id", "String"),
        ("event_time", _TIME),
        ("name", "String"),
        ("value", "Nullable(String)"),
    ),
    "events": (("person_id", "String"), ("event_time", _TIME), ("name", "String"), ("properties", "String")),
    "message_events": (
        ("person_id", "String"),
        ("event_time", _TIME),
        ("channel", "String"),
        ("campaign", "Nullable(String)"),
        ("status", "String"),
    ),
    "locations": (
        ("person_id", "String"),
        ("event_time", _TIME),
        ("kind", "String"),
        ("region_id", "Nullable(String)"),
        ("latitude", "Nullable(Float64)"),
        ("longitude", "Nullable(Float64)"),
    ),
    "sessions": (("person_id", "String"), ("event_time", _TIME)),
}


def columns_sql(table: str) -> str:
    return ", ".join(f"{name} {kind}" for name, kind in TABLES[table])


SERIES_TABLE = {"event": "events", "tag": "tags", "message": "message_events", "location": "locations",
                "session": "sessions"}  # fmt: skip
NUMERIC_TYPES = "('Int64', 'UInt64', 'Double')"


def quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(float(value))
    return quote(value)


def json_test(doc: str, key: str | None, predicate: Predicate) -> str:
    """SQL for ``predicates.test`` on a JSON document (``key`` None: the document is the scalar)."""
    path = f"{doc}, {quote(key)}" if key is not None else doc
    jtype = f"JSONType({path})"
    op, operand = predicate.op, predicate.operand

    def equal(item: Any) -> str:
        if isinstance(item, bool):
            return f"({jtype} = 'Bool' AND JSONExtractBool({path}) = {_literal(item)})"
        if isinstance(item, float):
            return f"({jtype} IN {NUMERIC_TYPES} AND JSONExtractFloat({path}) = {_literal(item)})"
        return f"({jtype} = 'String' AND JSONExtractString({path}) = {quote(item)})"

    if op == "exists":
        return f"({jtype} != 'Null')" if operand else f"({jtype} = 'Null')"
    if op == "equals":
        return equal(operand)
    if op == "in_":
        return "(" + " OR ".join(equal(item) for item in operand) + ")"
    if op == "contains":
        return f"({jtype} = 'String' AND position(JSONExtractString({path}), {quote(operand)}) > 0)"
    dated = op in ("before", "after") or isinstance(operand[0] if op == "between" else operand, datetime)
    if dated:
        text = f"JSONExtractString({path})"
        scaled = f"toUnixTimestamp64Milli(parseDateTime64BestEffortOrNull({text}, 3, 'UTC'))"
        guard = f"{jtype} = 'String' AND match({text}, {quote(DATE_PATTERN)})"
    else:
        scaled, guard = f"JSONExtractFloat({path})", f"{jtype} IN {NUMERIC_TYPES}"
    ms = (lambda v: str(instant_ms(v))) if dated else _literal
    if op == "between":
        cmp = f"{scaled} BETWEEN {ms(operand[0])} AND {ms(operand[1])}"
    else:
        sign = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "before": "<", "after": ">="}[op]
        cmp = f"{scaled} {sign} {ms(operand)}"
    return f"({guard} AND ifNull({cmp}, 0))"


def _membership(subquery: str, holds_when_empty: bool) -> str:
    # The subquery lists persons for which the leaf is true (IN) or false (NOT IN).
    return f"person_id {'NOT IN' if holds_when_empty else 'IN'} ({subquery})"


def _series_match(spec: Any) -> str:
    clauses = []
    if spec.kind in ("event", "tag"):
        clauses.append(f"name = {quote(spec.names[0])}")
    if spec.kind == "tag" and spec.tag_value is not None:
        clauses.append(f"value = {quote(spec.tag_value)}")
    if spec.kind == "event":
        clauses += [json_test("properties", f.property, f) for f in spec.where]
    if spec.kind == "message":
        clauses.append(f"status IN ({', '.join(quote(s) for s in spec.names)})")
        clauses += [
            f"{col} = {quote(v)}" for col, v in (("channel", spec.channel), ("campaign", spec.campaign)) if v
        ]
    if spec.kind == "location":
        clauses += [f"kind = {quote(spec.names[0])}", f"region_id = {quote(spec.region)}"]
    return " AND ".join(clauses) or "1"


def _counted(leaf: Any, now_ms: int, db: str) -> str:
    spec = spec_for(leaf)
    table = SERIES_TABLE[spec.kind]
    if spec.sum_property is not None:
        path = f"properties, {quote(spec.sum_property)}"
        amount = f"if(JSONType({path}) IN {NUMERIC_TYPES}, JSONExtractFloat({path}), 0.)"
    else:
        amount = "0."
    window = f" AND t >= {now_ms - leaf.within}" if leaf.within is not None else ""
    aggregate = (
        "SELECT person_id, count() AS n, sum(amount) AS total, min(t) AS first_t, max(t) AS last_t FROM ("
        f"SELECT person_id, toUnixTimestamp64Milli(event_time) AS t, {amount} AS amount FROM {db}{table} "
        f"WHERE {_series_match(spec)}) WHERE t <= {now_ms}{window} GROUP BY person_id"
    )
    test_sql = _measure_test(leaf, now_ms)
    empty = holds(leaf, Measure(0, 0.0, None, None), now_ms)
    return _membership(
        f"SELECT person_id FROM ({aggregate}) WHERE {'NOT ' if empty else ''}({test_sql})", empty
    )


def _measure_test(leaf: Any, now_ms: int) -> str:
    """``evaluate.holds`` over the aggregate columns n, total, first_t, last_t."""
    bound = leaf.first or leaf.last
    if bound is not None:
        column = "first_t" if leaf.first is not None else "last_t"
        parts = [f"{column} < {bound.before.resolve(now_ms)}"] if bound.before else []
        parts += [f"{column} >= {bound.after.resolve(now_ms)}"] if bound.after else []
        return " AND ".join(parts)
    if isinstance(leaf, EventCondition) and leaf.sum is not None:
        s, parts = leaf.sum, []
        for op, sign in (("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<=")):
            if getattr(s, op) is not None:
                parts.append(f"total {sign} {_literal(getattr(s, op))}")
        if s.between is not None:
            parts.append(f"total BETWEEN {_literal(s.between[0])} AND {_literal(s.between[1])}")
        return " AND ".join(parts)
    low, high = leaf.count_range
    return f"n >= {low}" + (f" AND n <= {high}" if high is not None else "")


def _leaf(leaf: Any, now_ms: int, db: str) -> str:
    if isinstance(leaf, AttributeCondition):
        latest = (
            f"SELECT person_id, argMax(value, updated_at) AS v FROM {db}profiles "
            f"WHERE name = {quote(leaf.attribute)} GROUP BY person_id"
        )
        empty = test(leaf, None)
        return _membership(
            f"SELECT person_id FROM ({latest}) WHERE {'NOT ' if empty else ''}{json_test('v', None, leaf)}",
            empty,
        )
    if isinstance(leaf, InsideCondition):
        latest = (
            f"SELECT person_id, argMax(kind, event_time) AS k FROM {db}locations "
            f"WHERE region_id = {quote(leaf.inside)} AND kind IN ('enter', 'exit', 'dwell') "
            "GROUP BY person_id"
        )
        kinds = ", ".join(quote(k) for k in INSIDE_KINDS)
        return _membership(f"SELECT person_id FROM ({latest}) WHERE k IN ({kinds})", False)
    if isinstance(leaf, NearCondition):
        p = leaf.near
        latest = (
            "SELECT person_id, "
            "argMax(tuple(assumeNotNull(latitude), assumeNotNull(longitude)), event_time) AS pos "
            f"FROM {db}locations WHERE latitude IS NOT NULL AND longitude IS NOT NULL GROUP BY person_id"
        )
        # predicates.haversine_km, term by term.
        p1, p2 = "radians(pos.1)", f"radians({p.lat!r})"
        dlon = f"radians({p.lon!r} - pos.2)"
        h = f"pow(sin(({p2} - {p1}) / 2), 2) + cos({p1}) * cos({p2}) * pow(sin({dlon} / 2), 2)"
        distance = f"2 * {EARTH_RADIUS_KM!r} * asin(sqrt({h}))"
        return _membership(f"SELECT person_id FROM ({latest}) WHERE {distance} <= {p.km!r}", False)
    return _counted(leaf, now_ms, db)


def _condition(condition: Any, now_ms: int, db: str) -> str:
    if isinstance(condition, AllOf):
        return "(" + " AND ".join(_condition(c, now_ms, db) for c in condition.all) + ")"
    if isinstance(condition, AnyOf):
        return "(" + " OR ".join(_condition(c, now_ms, db) for c in condition.any) + ")"
    if isinstance(condition, Not):
        return f"(NOT {_condition(condition.not_, now_ms, db)})"
    return _leaf(condition, now_ms, db)


def persons_sql(database: str | None = None) -> str:
    """Every known person: anyone with a row in any table."""
    db = f"{database}." if database else ""
    return " UNION DISTINCT ".join(f"SELECT person_id FROM {db}{table}" for table in TABLES)


def compile_segment(segment: Segment, now_ms: int, database: str | None = None) -> str:
    """``SELECT person_id`` of the segment's members at ``now_ms``, ordered."""
    db = f"{database}." if database else ""
    where = _condition(segment.condition, now_ms, db)
    return f"SELECT person_id FROM ({persons_sql(database)}) WHERE {where} ORDER BY person_id"
