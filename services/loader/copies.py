"""Exact copies of a record, dropped before they become a second row.

The enricher is at-least-once: after a crash it re-sends the outputs of the records it replays,
and those that had already left appear again on ``enriched`` as byte-identical copies, in the
same partition (same key), shortly after the original (docs/design.md, enricher "Recovery and
guarantees"). ClickHouse deduplicates retried *blocks*, not rows, so the loader drops them.

The rule is a function of the partition's log alone, so a batch replayed after a loader crash is
filtered exactly as the first time and keeps its insert token: a record is a copy when a record
with the same bytes sits in the ``window`` offsets before it. Values are compared by a 64-bit
hash (Python's, per process: the window is rebuilt by each process from the log); a collision
inside one window is about 1 in 10^10 at the default size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from itertools import compress

from services.loader.batcher import Batch, Item


class RecentValues:
    """The values of one partition's last ``window`` offsets."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._order: deque[tuple[int, int]] = deque()  # (offset, hash), ascending offsets
        self._latest: dict[int, int] = {}  # hash -> latest offset holding it
        self.next_offset = -1  # the offset after the last one seen

    def _forget_before(self, floor: int) -> None:
        order, latest = self._order, self._latest
        while order and order[0][0] < floor:
            offset, digest = order.popleft()
            if latest.get(digest) == offset:
                del latest[digest]

    def is_copy(self, offset: int, value: bytes | None) -> bool:
        """Whether ``value`` sits in the window before ``offset`` (offsets come in ascending
        order); remembers it either way."""
        self._forget_before(offset - self.window)
        digest = hash(value)
        seen = digest in self._latest
        self._order.append((offset, digest))
        self._latest[digest] = offset
        self.next_offset = offset + 1
        return seen


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
            for item in self._read_before(topic, partition, max(0, first_offset - self.window), first_offset):
                recent.is_copy(item.offset, item.value)
            self._partitions[(topic, partition)] = recent
        return recent

    def keep(self, batch: Batch) -> tuple[Batch, int]:
        """The batch without copies, and how many were dropped."""
        if self.window <= 0:
            return batch, 0
        recent = self._recent(batch.topic, batch.partition, batch.first)
        keep = [not recent.is_copy(o, v) for o, v in zip(batch.offsets, batch.values, strict=True)]
        if all(keep):
            return batch, 0
        columns = (batch.offsets, batch.keys, batch.values)
        offsets, keys, values = (list(compress(column, keep)) for column in columns)
        return Batch(batch.topic, batch.partition, offsets, keys, values), keep.count(False)
