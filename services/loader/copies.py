"""Exact copies of a record, dropped before they become a second row.

The enricher is at-least-once: after a crash it re-sends the outputs of the records it replays,
and those that had already left appear again on ``enriched`` as byte-identical copies, in the
same partition (same key), shortly after the original (docs/design.md, enricher "Recovery and
guarantees"). ClickHouse deduplicates retried *blocks*, not rows, so the loader drops them.

The rule is a function of the partition's log alone, so a batch replayed after a loader crash is
filtered exactly as the first time and keeps its insert token: a record is a copy when a record
with the same bytes sits in the ``window`` offsets before it. Values are compared by a 64-bit
hash (Python's, per process: the window is rebuilt by each process from the log); a collision
inside one window is about 1 in 10^10 at the default size (``services/common/recent.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import compress

from services.common.recent import RecentValues
from services.loader.batcher import Batch, Item


class CopyFilter:
    """One :class:`RecentValues` per partition, primed from the log when a partition is new."""

    def __init__(self, window: int, read_before: Callable[[str, int, int, int], Iterable[Item]]) -> None:
        self.window = window
        self._read_before = read_before  # (topic, partition, first, end) -> items in [first, end)
        self._partitions: dict[tuple[str, int], RecentValues] = {}

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        for tp in partitions:
            self._partitions.pop(tp, None)

    def _recent(self, topic: str, partition: int, first_offset: int) -> RecentValues:
        recent = self._partitions.get((topic, partition))
        # Batches of a partition follow each other; anything else (a first batch, a re-read after
        # a revoke, a jump) starts over from the log.
        if recent is None or not recent.next_offset <= first_offset < recent.next_offset + self.window:
            recent = RecentValues(self.window)
            start = max(0, first_offset - self.window)
            items = list(self._read_before(topic, partition, start, first_offset))
            recent.copies([item.offset for item in items], [item.value for item in items])
            self._partitions[(topic, partition)] = recent
        return recent

    def keep(self, batch: Batch) -> tuple[Batch, int]:
        """The batch without copies, and how many were dropped."""
        if self.window <= 0:
            return batch, 0
        recent = self._recent(batch.topic, batch.partition, batch.first)
        copies = recent.copies(batch.offsets, batch.values)
        if not any(copies):
            return batch, 0
        keep = [not copy for copy in copies]
        columns = (batch.offsets, batch.keys, batch.values)
        offsets, keys, values = (list(compress(column, keep)) for column in columns)
        return Batch(batch.topic, batch.partition, offsets, keys, values), copies.count(True)
