"""Per-partition batches with fixed offset ranges, cut by age, size or a replay boundary.

Pure bookkeeping (no Kafka, no ClickHouse): the loader adds consumed messages and asks which
batches are due. A batch is always a contiguous run of one partition's messages, so its
offset range names it, and that name is its ClickHouse insert token.

After a restart the first batches of a partition must cover exactly the ranges the crashed
process used (read from the ``loader_batches`` intent log: up to two, as the next round's intent
is written while the previous round commits), otherwise their tokens would differ and ClickHouse
could not recognise the retried blocks: :meth:`Batcher.set_boundaries` pins them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

TopicPartition = tuple[str, int]


class Item(NamedTuple):  # a tuple: built once per consumed message, so it must be cheap
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Batch:
    """Columns, not one object per message: the fast path (native.py) needs only the offsets and
    values, and building an :class:`Item` per consumed message cost more than framing it."""

    topic: str
    partition: int
    offsets: Sequence[int]
    keys: Sequence[bytes | None]
    values: Sequence[bytes | None]

    @property
    def first(self) -> int:
        return self.offsets[0]

    @property
    def last(self) -> int:
        return self.offsets[-1]

    def __len__(self) -> int:
        return len(self.offsets)

    @cached_property
    def items(self) -> tuple[Item, ...]:
        """One :class:`Item` per record, for the Python path and dead letters."""
        return tuple(map(Item, self.offsets, self.keys, self.values))

    @property
    def token(self) -> str:
        return f"{self.topic}:{self.partition}:{self.first}-{self.last}"


@dataclass
class _Buffer:
    started: float
    offsets: list[int] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    values: list[bytes | None] = field(default_factory=list)


class Batcher:
    def __init__(self, flush_seconds: float, flush_rows: int) -> None:
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self._buffers: dict[TopicPartition, _Buffer] = {}
        # Replay: the last offsets of the crashed run's batches, in order; each cuts exactly there.
        self._pinned: dict[TopicPartition, list[int]] = {}

    def add(self, topic: str, partition: int, item: Item, now: float) -> bool:
        """Buffer a message; returns True when it starts a new buffer for its partition."""
        return self.extend(topic, partition, [item.offset], [item.key], [item.value], now)

    def extend(
        self,
        topic: str,
        partition: int,
        offsets: list[int],
        keys: list[bytes | None],
        values: list[bytes | None],
        now: float,
    ) -> bool:
        """Buffer consecutive messages of one partition, as columns; True when they start a new
        buffer."""
        buffer = self._buffers.get((topic, partition))
        if buffer is None:
            self._buffers[(topic, partition)] = _Buffer(now, offsets, keys, values)
            return True
        buffer.offsets += offsets
        buffer.keys += keys
        buffer.values += values
        return False

    def set_boundaries(self, topic: str, partition: int, last_offsets: Sequence[int]) -> None:
        """Pin the partition's next cuts (ascending last offsets of a crashed run's batches)."""
        if last_offsets:
            self._pinned[(topic, partition)] = list(last_offsets)

    def due(self, now: float) -> list[Batch]:
        """Take every batch that is old enough, big enough, or has reached its replay boundary;
        when any is, also those past half their age or size (see :meth:`_rides_along`)."""
        due = {tp for tp, buffer in self._buffers.items() if self._is_due(tp, buffer, now)}
        if not due:
            return []
        return [
            self._take(tp, now)
            for tp, buffer in list(self._buffers.items())
            if tp in due or self._rides_along(tp, buffer, now)
        ]

    def has_due(self, now: float) -> bool:
        """Whether :meth:`due` would return a batch now."""
        return any(self._is_due(tp, buffer, now) for tp, buffer in self._buffers.items())

    def _pin(self, tp: TopicPartition, buffer: _Buffer) -> int | None:
        """The partition's pinned cut, if any (pins before the buffered records are stale: those
        records are gone from the log, the cut cannot be repeated)."""
        pins = self._pinned.get(tp)
        while pins and pins[0] < buffer.offsets[0]:
            pins.pop(0)
        if not pins:
            self._pinned.pop(tp, None)
            return None
        return pins[0]

    def _is_due(self, tp: TopicPartition, buffer: _Buffer, now: float) -> bool:
        pin = self._pin(tp, buffer)
        if pin is not None:  # only at its last offset: cut earlier, its token would differ
            return buffer.offsets[-1] >= pin
        if now - buffer.started >= self.flush_seconds:
            return True
        return len(buffer.offsets) >= self.flush_rows

    def _rides_along(self, tp: TopicPartition, buffer: _Buffer, now: float) -> bool:
        """Partitions fill at about the same pace: taking the half-full ones with a due one
        writes them in the same round (one intent statement, one commit) instead of one round
        each moments later. Never a buffer waiting for its replay boundary (its cut is fixed)."""
        if self._pin(tp, buffer) is not None:
            return False
        return 2 * len(buffer.offsets) >= self.flush_rows or 2 * (now - buffer.started) >= self.flush_seconds

    def drain(self, now: float) -> list[Batch]:
        """Every buffered message, as batches (at shutdown), except a replay that has not reached
        its boundary: cut short it would get another token; it replays on the next run."""
        batches = []
        while self._buffers:
            for tp, buffer in list(self._buffers.items()):
                pin = self._pin(tp, buffer)
                if pin is not None and buffer.offsets[-1] < pin:
                    self.drop([tp])
                else:
                    batches.append(self._take(tp, now))
        return batches

    def drop(self, partitions: list[TopicPartition]) -> None:
        """Forget buffers of revoked partitions: their new owner replays from the committed offset."""
        for tp in partitions:
            self._buffers.pop(tp, None)
            self._pinned.pop(tp, None)

    def _take(self, tp: TopicPartition, now: float) -> Batch:
        buffer = self._buffers[tp]
        pin = self._pin(tp, buffer)
        del self._buffers[tp]
        offsets, keys, values = buffer.offsets, buffer.keys, buffer.values
        if pin is None:
            cut = min(len(offsets), self.flush_rows)
        else:  # offsets ascend: the boundary's position (not 0: stale pins were dropped)
            cut = bisect_right(offsets, pin)
            self._pinned[tp].pop(0)
            if not self._pinned[tp]:
                del self._pinned[tp]
        topic, partition = tp
        if cut < len(offsets):  # the remainder starts the next batch, whose clock starts now
            self._buffers[(topic, partition)] = _Buffer(now, offsets[cut:], keys[cut:], values[cut:])
            offsets, keys, values = offsets[:cut], keys[:cut], values[:cut]
        return Batch(topic, partition, offsets, keys, values)

    def __len__(self) -> int:
        return sum(len(b.offsets) for b in self._buffers.values())
