"""The in-memory index of when each person of a partition next needs a tick (a timer), per partition.

It is derived data: rebuilt from a faust table (each entry stores its partition and its next due
time) whenever a partition is (re)assigned, then kept up to date by every write. The trigger's
pending sends and the enricher's session ends use it.
A heap per partition with lazy deletion: setting a new due time leaves the old heap entry behind,
and popping skips entries that no longer match the person's current due time.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable

STALE_SLACK = 1024  # stale heap entries tolerated beyond one per live entry before a rebuild
TICK_RESEND_S = 10.0  # a tick not handled by then (lost in a rebalance) is sent again


class DueIndex:
    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[int, str]]] = {}
        self._due: dict[int, dict[str, int]] = {}
        self.built: set[int] = set()  # partitions whose index was rebuilt since their assignment
        self.broadcasts_done: dict[int, set[str]] = {}
        self.assigned: set[int] = set()
        self._ticks_sent: dict[int, float] = {}  # partition -> when its tick was sent (monotonic)

    def reassign(self, partitions: Iterable[int]) -> None:
        """Forget partitions no longer ours; new ones need a rebuild before they tick."""
        now = set(partitions)
        for p in self.assigned - now:
            self.forget(p)
        self.assigned = now
        self._ticks_sent.clear()

    def forget(self, partition: int) -> None:
        self._heaps.pop(partition, None)
        self._due.pop(partition, None)
        self._ticks_sent.pop(partition, None)
        self.broadcasts_done.pop(partition, None)
        self.built.discard(partition)

    def set(self, partition: int, person: str, due_ms: int | None) -> None:
        current = self._due.setdefault(partition, {})
        if due_ms is None:
            current.pop(person, None)
            return
        if current.get(person) == due_ms:
            return
        current[person] = due_ms
        heap = self._heaps.setdefault(partition, [])
        heapq.heappush(heap, (due_ms, person))
        if len(heap) > 2 * len(current) + STALE_SLACK:
            # A busy person moves its time at every record (a session's end): without this the
            # stale entries of a whole timeout would pile up before they reach the top.
            heap[:] = [(due, who) for who, due in current.items()]
            heapq.heapify(heap)

    def ticks_to_send(
        self, actives: set[int], now_ms: int, also_due: Callable[[int], bool] = lambda p: False
    ) -> list[tuple[int, str]]:
        """The service timer's question: which of its active partitions get a tick now, and of
        which kind: ``rebuild`` (not indexed since its assignment) or ``due`` (a person's time
        came, or ``also_due``). None while the partition's previous tick is on its way (sent again
        after ``TICK_RESEND_S``: lost in a rebalance); :meth:`tick_handled` clears that."""
        if actives != self.assigned:
            self.reassign(actives)
        mono = time.monotonic()
        ticks = []
        for p in sorted(actives):
            if mono - self._ticks_sent.get(p, -TICK_RESEND_S) < TICK_RESEND_S:
                continue
            if p not in self.built:
                kind = "rebuild"
            elif self.has_due(p, now_ms) or also_due(p):
                kind = "due"
            else:
                continue
            self._ticks_sent[p] = mono
            ticks.append((p, kind))
        return ticks

    def tick_handled(self, partition: int) -> None:
        self._ticks_sent.pop(partition, None)

    def _clean_top(self, partition: int) -> list[tuple[int, str]]:
        heap, current = self._heaps.get(partition, []), self._due.get(partition, {})
        while heap and current.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        return heap

    def next_due(self, partition: int) -> int | None:
        heap = self._clean_top(partition)
        return heap[0][0] if heap else None

    def has_due(self, partition: int, now_ms: int) -> bool:
        nxt = self.next_due(partition)
        return nxt is not None and nxt <= now_ms

    def take_due(self, partition: int, now_ms: int) -> list[str]:
        """Remove and return the persons of ``partition`` due at ``now_ms``, earliest first.

        The caller decides for each and sets its next due time again.
        """
        found: list[str] = []
        heap = self._clean_top(partition)
        current = self._due.get(partition, {})
        while heap and heap[0][0] <= now_ms:
            due_ms, person = heapq.heappop(heap)
            if current.get(person) == due_ms:
                del current[person]
                found.append(person)
        return found

    def pending(self) -> int:
        return sum(len(d) for d in self._due.values())
