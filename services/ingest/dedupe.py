"""Deduplication by message_id within a window, per raw (topic, partition).

The in-memory map is a cache of the ``ingest-dedup`` topic: the message_ids a batch passed on a
raw partition are written there as one marker record (``batch_markers``; partition = the raw
partition) in the same Kafka transaction as the outputs and the consumer offsets, so the markers
always agree with what was committed. When a raw partition is assigned (start, restart,
rebalance) its markers are read back before any of its records are processed. Markers of one
record each (key ``<raw topic>|<message_id>``, value ms), as older versions wrote them, still
read back; they cost a second produce per record, as much broker work as the output itself.

A duplicate is caught when it arrives on the same raw partition as the original, which is the
case whenever producers key records the same way (SDKs and the collector key by device).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

# A batch marker stays below the broker's default 1 MB message limit whatever the batch size (one
# message_id is at most a record, 256 KB by default).
MAX_MARKER_BYTES = 512 * 1024
_BATCH_MARKER = b"\x00"
_SEEN = struct.Struct(">q")
_LENGTH = struct.Struct(">I")

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


def batch_markers(
    topic: str, next_offset: int, seen_ms: int, message_ids: list[str]
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) marker records for the message_ids one batch passed on one raw partition.

    Value: a zero byte (one-record markers are ASCII digits), the first-seen ms as 8 bytes, then
    each message_id as a 4-byte length and its UTF-8 bytes; no escaping, so the size is exact.
    Keys are unique per committed batch and chunk (offsets only grow): compaction drops none.
    """
    header = _BATCH_MARKER + _SEEN.pack(seen_ms)
    parts: list[bytes] = []
    size = 0
    index = 0
    for message_id in message_ids:
        encoded = message_id.encode()
        if parts and size + len(encoded) > MAX_MARKER_BYTES:
            yield f"{topic}|@{next_offset}.{index}".encode(), header + b"".join(parts)
            parts, size, index = [], 0, index + 1
        parts.append(_LENGTH.pack(len(encoded)) + encoded)
        size += len(encoded) + 4
    if parts:
        yield f"{topic}|@{next_offset}.{index}".encode(), header + b"".join(parts)


def read_marker(key: bytes, value: bytes) -> list[tuple[str, str, int]]:
    """(raw topic, message_id, first seen ms) for each id a marker holds; [] for anything else."""
    try:
        if value[:1] != _BATCH_MARKER:
            single = parse_marker(key, value)
            return [single] if single else []
        topic = key.decode().split("|", 1)[0]
        (seen,) = _SEEN.unpack_from(value, 1)
        out = []
        at = 1 + _SEEN.size
        while at < len(value):
            (length,) = _LENGTH.unpack_from(value, at)
            at += _LENGTH.size
            if at + length > len(value):
                return []  # truncated: not a marker ingest wrote
            out.append((topic, value[at : at + length].decode(), seen))
            at += length
        return out
    except (struct.error, UnicodeDecodeError):
        return []


def marker_key(topic: str, message_id: str) -> bytes:
    """Key of a one-record marker, as versions before batch markers wrote them."""
    return f"{topic}|{message_id}".encode()


def parse_marker(key: bytes, value: bytes) -> tuple[str, str, int] | None:
    try:
        topic, message_id = key.decode().split("|", 1)
        return topic, message_id, int(value)
    except (ValueError, UnicodeDecodeError):
        return None
