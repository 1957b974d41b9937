"""Deduplication by message_id within a window, per raw (topic, partition).

The in-memory map is a cache of the compacted ``ingest-dedup`` topic: every record ingest passes
writes a marker there (key ``<raw topic>|<message_id>``, partition = the raw partition) in the
same Kafka transaction as its output and its consumer offset, so the markers always agree with
what was committed. When a raw partition is assigned (start, restart, rebalance) its markers are
read back before any of its records are processed.

A duplicate is caught when it arrives on the same raw partition as the original, which is the
case whenever producers key records the same way (SDKs and the collector key by device).
"""

from __future__ import annotations

from collections.abc import Iterable

Partition = tuple[str, int]  # (raw topic, partition)


class DedupeStore:
    def __init__(self, window_ms: int) -> None:
        self.window_ms = window_ms
        self._seen: dict[Partition, dict[str, int]] = {}

    def is_duplicate(self, partition: Partition, message_id: str, now_ms: int) -> bool:
        first_seen = self._seen.get(partition, {}).get(message_id)
        return first_seen is not None and now_ms - first_seen < self.window_ms

    def remember(self, partition: Partition, message_id: str, now_ms: int) -> None:
        self._seen.setdefault(partition, {})[message_id] = now_ms

    def forget(self, partition: Partition, message_ids: Iterable[str]) -> None:
        """Undo ``remember`` for a batch whose transaction was aborted."""
        seen = self._seen.get(partition, {})
        for message_id in message_ids:
            seen.pop(message_id, None)

    def load(self, partition: Partition, entries: Iterable[tuple[str, int]], now_ms: int) -> int:
        seen = self._seen.setdefault(partition, {})
        for message_id, first_seen in entries:
            if now_ms - first_seen < self.window_ms:
                seen[message_id] = first_seen
        return len(seen)

    def drop(self, partition: Partition) -> None:
        self._seen.pop(partition, None)

    def expire(self, now_ms: int) -> int:
        removed = 0
        for seen in self._seen.values():
            old = [m for m, t in seen.items() if now_ms - t >= self.window_ms]
            for message_id in old:
                del seen[message_id]
            removed += len(old)
        return removed

    def size(self) -> int:
        return sum(len(s) for s in self._seen.values())


def marker_key(topic: str, message_id: str) -> bytes:
    return f"{topic}|{message_id}".encode()


def parse_marker(key: bytes, value: bytes) -> tuple[str, str, int] | None:
    try:
        topic, message_id = key.decode().split("|", 1)
        return topic, message_id, int(value)
    except (ValueError, UnicodeDecodeError):
        return None
