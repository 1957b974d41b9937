"""Per-partition batches with fixed offset ranges, cut by age, size or a replay boundary.

Pure bookkeeping (no Kafka, no ClickHouse): the loader adds consumed messages and asks which
batches are due. A batch is always a contiguous run of one partition's messages, so its
offset range names it, and that name is its ClickHouse insert token.

After a restart the first batch of a partition must cover exactly the range the crashed
process used (read from the ``loader_batches`` intent log), otherwise its token would differ
and ClickHouse could not recognise the retried block: :meth:`Batcher.set_boundary` pins it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

TopicPartition = tuple[str, int]


class Item(NamedTuple):  # a tuple: built once per consumed message, so it must be cheap
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Batch:
    topic: str
    partition: int
    items: tuple[Item, ...]

    @property
    def first(self) -> int:
        return self.items[0].offset

    @property
    def last(self) -> int:
        return self.items[-1].offset

    @property
    def token(self) -> str:
        return f"{self.topic}:{self.partition}:{self.first}-{self.last}"


@dataclass
class _Buffer:
    started: float
    items: list[Item] = field(default_factory=list)
    boundary: int | None = None  # replay: cut exactly after this offset


class Batcher:
    def __init__(self, flush_seconds: float, flush_rows: int) -> None:
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self._buffers: dict[TopicPartition, _Buffer] = {}

    def add(self, topic: str, partition: int, item: Item, now: float) -> bool:
        """Buffer a message; returns True when it starts a new buffer for its partition."""
        buffer = self._buffers.get((topic, partition))
        if buffer is None:
            self._buffers[(topic, partition)] = _Buffer(now, [item])
            return True
        buffer.items.append(item)
        return False

    def extend(self, topic: str, partition: int, items: list[Item], now: float) -> bool:
        """Buffer consecutive messages of one partition; True when they start a new buffer."""
        buffer = self._buffers.get((topic, partition))
        if buffer is None:
            self._buffers[(topic, partition)] = _Buffer(now, items)
            return True
        buffer.items.extend(items)
        return False

    def set_boundary(self, topic: str, partition: int, last_offset: int) -> None:
        buffer = self._buffers.get((topic, partition))
        if buffer is not None:
            buffer.boundary = last_offset

    def due(self, now: float) -> list[Batch]:
        """Take every batch that is old enough, big enough, or has reached its replay boundary."""
        batches = []
        for (topic, partition), buffer in list(self._buffers.items()):
            if buffer.boundary is not None:
                reached = buffer.items[-1].offset >= buffer.boundary
                if reached or now - buffer.started >= self.flush_seconds:
                    batches.append(self._take(topic, partition, buffer.boundary, now))
            elif len(buffer.items) >= self.flush_rows or now - buffer.started >= self.flush_seconds:
                batches.append(self._take(topic, partition, None, now))
        return batches

    def drain(self, now: float) -> list[Batch]:
        """Every buffered message, as batches (at shutdown)."""
        batches = []
        while self._buffers:
            for (topic, partition), buffer in list(self._buffers.items()):
                batches.append(self._take(topic, partition, buffer.boundary, now))
        return batches

    def drop(self, partitions: list[TopicPartition]) -> None:
        """Forget buffers of revoked partitions: their new owner replays from the committed offset."""
        for tp in partitions:
            self._buffers.pop(tp, None)

    def _take(self, topic: str, partition: int, boundary: int | None, now: float) -> Batch:
        buffer = self._buffers.pop((topic, partition))
        items = buffer.items
        if boundary is None:
            cut = min(len(items), self.flush_rows)
        else:
            cut = sum(1 for item in items if item.offset <= boundary) or min(len(items), self.flush_rows)
        rest = items[cut:]
        if rest:  # the remainder starts the next batch, whose clock starts now
            self._buffers[(topic, partition)] = _Buffer(now, rest)
        return Batch(topic, partition, tuple(items[:cut]))

    def __len__(self) -> int:
        return sum(len(b.items) for b in self._buffers.values())
