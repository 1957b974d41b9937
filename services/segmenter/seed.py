"""Initial membership of added or changed segments that need history (``Reload.needs_history``).

Two sources, tried in order:
1. ClickHouse (the loader's tables), when ``TAGSTREAM_CLICKHOUSE_URL`` names a server: members by
   the oracle query at ``now`` and the segments' series rebuilt from the facts read back
   (``backfill``), restricted to the persons this partition's engine knows (the query sees every
   partition's persons).
2. The state the engine already has: the segment is evaluated for every known person from what
   the state tracked, and streams from now on. Facts the state did not keep (a series no segment
   read before) are not counted — the documented limit without ClickHouse. The embedded chDB
   (no URL) is not opened: one process holds a chDB path at a time and that is the loader.
A ClickHouse failure (unreachable, tables missing) is logged and falls back to 2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.common.logs import get_logger
from services.segmenter import backfill, metrics
from services.segmenter.engine import Change, Engine
from services.segmenter.evaluate import evaluate
from services.segmenter.sql import compile_segment
from services.segmenter.stream import Seeder

log = get_logger("segmenter")


def from_state(engine: Engine, pending: frozenset[str], now_ms: int) -> list[Change]:
    changes: list[Change] = []
    for segment_id in sorted(pending):
        segment = engine.index.segments[segment_id]
        members = {p for p, state in engine.states.items() if evaluate(segment, state, now_ms)}
        changes += engine.seed(segment_id, members, {}, now_ms)
        metrics.SEEDS.labels("state").inc()
    return changes


def from_clickhouse(engine: Engine, pending: frozenset[str], client: Any, now_ms: int,
                    database: str | None) -> list[Change]:  # fmt: skip
    known = set(engine.states)
    needs = engine.index.only(pending)
    facts = (f for f in backfill.read_facts(client, needs, database) if f.person_id in known)
    states = backfill.rebuild(engine.states, needs, facts, now_ms)
    answers = {}
    for segment_id in sorted(pending):  # every query first: a failure leaves the engine untouched
        query = compile_segment(engine.index.segments[segment_id], now_ms, database)
        answers[segment_id] = {row[0] for row in client.query(query).result_rows} & known
    changes: list[Change] = []
    for segment_id, members in answers.items():
        changes += engine.seed(segment_id, members, states, now_ms)
        metrics.SEEDS.labels("clickhouse").inc()
    return changes


def seeder(connect: Callable[[], Any] | None, database: str | None) -> Seeder:
    """``connect`` opens a ClickHouse client (None: no server configured, seed from state)."""

    def seed(engine: Engine, pending: frozenset[str], now_ms: int) -> list[Change]:
        if connect is not None:
            try:
                return from_clickhouse(engine, pending, connect(), now_ms, database)
            except Exception as exc:  # unreachable, tables missing, a query refused: seed from state
                log.warning(
                    "seeding from ClickHouse failed; seeding from state",
                    extra={"segments": sorted(pending), "error": f"{type(exc).__name__}: {exc}"[:500]},
                )
        return from_state(engine, pending, now_ms)

    return seed
