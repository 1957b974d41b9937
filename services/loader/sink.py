"""ClickHouse side of a batch: intent log, deduplicated insert, and isolating rejected rows.

Order for one batch (see ``main.py``): record the intent (offset range) → insert with
``insert_deduplication_token = topic:partition:first-last`` → (caller) commit the offset.
If ClickHouse refuses the insert because of the data, the batch is split in halves, each half
inserted with the token of *its own* offset range, down to single records; a single record
that still fails, and again on two retries, is returned as rejected (→ dead letter). Tokens
depend only on offsets, so a replay of the same range makes the same inserts and ClickHouse
drops the ones it already has.

Connection failures are not data errors: they raise :class:`SinkUnavailable` and the loader
retries the whole batch later (same tokens), without committing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from services.loader.native import NativeLoader
from services.loader.rows import SOURCE_COLUMNS, Row


class SinkUnavailable(Exception):
    """ClickHouse could not be reached; nothing about the data is known to be wrong."""


SINGLE_RETRY_PAUSES_S = (0.2, 1.0)  # before each retry of a record ClickHouse refused


@dataclass(frozen=True)
class Rejected:
    offset: int
    message: str  # ClickHouse's reason, without the column values it quotes


@dataclass(frozen=True)
class Pending:
    """Rows of one record, tagged with its offset (one record may make several rows)."""

    offset: int
    rows: Sequence[Row]


def clickhouse_reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # ClickHouse quotes offending values ("Column values: lat = 100"); dead letters keep the
    # original bytes already, and logs must not echo personal data.
    for marker in (" Column values:", " Value:"):
        text = text.split(marker)[0]
    return text[:500]


def replay_cuts(intents: Sequence[tuple[int, int]], first: int) -> list[int]:
    """The last offsets a crashed run cut a partition at, from its first consumed offset on: the
    intent starting exactly there, then each intent starting after the previous one's last (a
    crash while a round committed leaves the next round's intent too). Intents beyond the
    committed offset are one run's consecutive batches (offsets between two may be transaction
    markers, so "next" is the next first offset). ``intents``: (first, last) in order of first."""
    ranges = [r for r in intents if r[0] >= first]
    if not ranges or ranges[0][0] != first:  # no batch started exactly here
        return []
    cuts = [ranges[0][1]]
    for start, last in ranges[1:]:
        if start > cuts[-1]:
            cuts.append(last)
    return cuts


class ClickHouseSink:
    def __init__(self, client: Client, lock: threading.Lock | None = None) -> None:
        self.client = client
        self.lock = lock or threading.Lock()  # the analytics API shares the embedded client
        self.inserts = 0  # acknowledged insert calls (for metrics and tests)
        self.native = NativeLoader(client)
        self.native_batches = 0  # batches ClickHouse decoded itself (for the bench and tests)

    def pending_boundary(self, topic: str, partition: int, first_offset: int) -> int | None:
        """The last offset of a batch that started at ``first_offset`` before a crash, if any."""
        chain = self.pending_boundaries([(topic, partition, first_offset)]).get((topic, partition))
        return chain[0] if chain else None

    def pending_boundaries(self, starts: Sequence[tuple[str, int, int]]) -> dict[tuple[str, int], list[int]]:
        """Where a crashed run cut each partition from its first offset on (:func:`replay_cuts`),
        for several (topic, partition, first offset) in one query: a loader assigned many
        partitions looks them all up as it starts."""
        intents = self.pending_intents(starts)
        found = {(t, p): replay_cuts(intents[(t, p)], first) for t, p, first in starts}
        return {tp: cuts for tp, cuts in found.items() if cuts}

    def pending_intents(
        self, starts: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int], list[tuple[int, int]]]:
        """The recorded (first, last) ranges of each (topic, partition) starting at or after its
        offset, in order (an empty list where there are none)."""
        intents: dict[tuple[str, int], list[tuple[int, int]]] = {(t, p): [] for t, p, _ in starts}
        if not starts:
            return intents
        where = " OR ".join(
            f"(topic = {{t{i}:String}} AND partition = {{p{i}:UInt16}} AND first_offset >= {{f{i}:UInt64}})"
            for i in range(len(starts))
        )
        parameters: dict[str, str | int] = {}
        for i, (topic, partition, first) in enumerate(starts):
            parameters.update({f"t{i}": topic, f"p{i}": partition, f"f{i}": first})
        with self.lock:
            try:
                result = self.client.query(
                    "SELECT topic, partition, first_offset, argMax(last_offset, created_at) "
                    f"FROM loader_batches WHERE {where} "
                    "GROUP BY topic, partition, first_offset ORDER BY topic, partition, first_offset",
                    parameters=parameters,
                ).result_rows
            except OperationalError as exc:
                raise SinkUnavailable(clickhouse_reason(exc)) from exc
        for topic, partition, first, last in result:
            intents[(topic, int(partition))].append((int(first), int(last)))
        return intents

    def record_intent(self, topic: str, partition: int, first: int, last: int) -> None:
        self.record_intents([(topic, partition, first, last)])

    def record_intents(self, intents: Sequence[tuple[str, int, int, int]]) -> None:
        """Several batches' (topic, partition, first, last) in one statement: a statement costs
        chDB as much as thousands of rows."""
        values = ", ".join(
            f"({{t{i}:String}}, {{p{i}:UInt16}}, {{f{i}:UInt64}}, {{l{i}:UInt64}})"
            for i in range(len(intents))
        )
        parameters = {}
        for i, (topic, partition, first, last) in enumerate(intents):
            parameters.update({f"t{i}": topic, f"p{i}": partition, f"f{i}": first, f"l{i}": last})
        self._call(
            self.client.command,  # one statement (client.insert would stage a file and describe the table)
            f"INSERT INTO loader_batches (topic, partition, first_offset, last_offset) VALUES {values}",
            parameters=parameters,
        )

    def load_avro(
        self,
        table: str,
        columns: Sequence[str],
        record_type: str,
        topic: str,
        partition: int,
        offsets: Sequence[int],
        values: Sequence[bytes | None],
        persons: Sequence[str] | None = None,
    ) -> bool:
        """The records decoded and converted by ClickHouse (native.py), with the token of their
        offset range; False when that path does not apply or ClickHouse refused: use :meth:`load`."""
        if not self.native.enabled:
            return False
        with self.lock:
            done = self.native.load(table, columns, record_type, topic, partition, offsets, values, persons)
        self.native_batches += done
        return done

    def load(
        self, table: str, columns: Sequence[str], topic: str, partition: int, pending: list[Pending]
    ) -> list[Rejected]:
        """Insert every record's rows exactly once; return the records ClickHouse refused."""
        names = [*columns, *SOURCE_COLUMNS]
        rejected: list[Rejected] = []
        self._load(table, names, topic, partition, pending, rejected)
        return rejected

    def _load(
        self,
        table: str,
        names: list[str],
        topic: str,
        partition: int,
        pending: list[Pending],
        rejected: list[Rejected],
    ) -> None:
        if not pending:
            return
        data = [(*row, topic, partition, p.offset) for p in pending for row in p.rows]
        token = f"{topic}:{partition}:{pending[0].offset}-{pending[-1].offset}"
        try:
            if data:
                self._insert(table, names, data, token)
            return
        except SinkUnavailable:
            raise
        except Exception as exc:  # the data: a constraint, a type, a value out of range
            if len(pending) == 1:
                if not self._refused_again(table, names, data, token):
                    return  # a passing error (the whole batch met it, not this record): loaded
                rejected.append(Rejected(pending[0].offset, clickhouse_reason(exc)))
                return
        middle = len(pending) // 2
        self._load(table, names, topic, partition, pending[:middle], rejected)
        self._load(table, names, topic, partition, pending[middle:], rejected)

    def _refused_again(self, table: str, names: list[str], data: list[Any], token: str) -> bool:
        """Whether one record's rows are refused on every retry. A record is dead-lettered only
        when ClickHouse refuses it again and again: an error that passes (not an unreachable
        server, which is retried forever) must not park a valid record. The same token: a retry
        whose first attempt did insert is dropped as a duplicate."""
        for pause in SINGLE_RETRY_PAUSES_S:
            time.sleep(pause)  # a back-off, in the writer thread
            try:
                self._insert(table, names, data, token)
                return False
            except SinkUnavailable:
                raise
            except Exception:  # refused again
                continue
        return True

    def _insert(self, table: str, names: list[str], data: list[Any], token: str) -> None:
        settings = {"insert_deduplication_token": token}  # a retried range is dropped as a duplicate
        self._call(self.client.insert, table, data, column_names=names, settings=settings)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            try:
                result = fn(*args, **kwargs)
            except OperationalError as exc:
                raise SinkUnavailable(clickhouse_reason(exc)) from exc
        self.inserts += 1
        return result
