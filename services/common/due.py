"""The in-memory index of when each person of a partition next needs a tick (a timer), per partition.

It is derived data: rebuilt from a faust table (each entry stores its partition and its next due
time) whenever a partition is (re)assigned, then kept up to date by every write. The trigger's
pending sends and the enricher's session ends use it.
A heap per partition with lazy deletion: setting a new due time leaves the old heap entry behind,
and popping skips entries that no longer match the person's current due time.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

STALE_SLACK = 1024  # stale heap entries tolerated beyond one per live entry before a rebuild


class DueIndex:
    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[int, str]]] = {}
        self._due: dict[int, dict[str, int]] = {}
        self.built: set[int] = set()  # partitions whose index was rebuilt since their assignment
        self.broadcasts_done: dict[int, set[str]] = {}
        self.assigned: set[int] = set()

    def reassign(self, partitions: Iterable[int]) -> None:
        """Forget partitions no longer ours; new ones need a rebuild before they tick."""
        now = set(partitions)
        for p in self.assigned - now:
            self.forget(p)
        self.assigned = now

    def forget(self, partition: int) -> None:
        self._heaps.pop(partition, None)
        self._due.pop(partition, None)
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
