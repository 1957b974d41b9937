"""Read a raw partition's deduplication markers back from ``ingest-dedup`` on assignment."""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from services.common.kafka import make_reader
from services.common.settings import Settings
from services.ingest.dedupe import parse_marker


def read_markers(
    settings: Settings, dedup_topic: str, partition: int, raw_topic: str, deadline_s: float = 60.0
):
    """(message_id, first_seen_ms) of ``raw_topic`` markers in one dedup partition, committed ones only.

    Reads up to the end of the partition as it is now. Records of an open transaction (a producer
    killed mid-batch) hold the read back until that transaction is aborted — by our own
    ``init_transactions`` on restart, or by the broker's transaction timeout.
    """
    reader = make_reader(settings, **{"isolation.level": "read_committed", "enable.partition.eof": True})
    try:
        tp = TopicPartition(dedup_topic, partition, OFFSET_BEGINNING)
        low, high = reader.get_watermark_offsets(tp, timeout=10)
        if high <= low:
            return []
        reader.assign([tp])
        entries: list[tuple[str, int]] = []
        deadline = time.monotonic() + deadline_s
        prefix = f"{raw_topic}|".encode()
        while time.monotonic() < deadline:
            for message in reader.consume(num_messages=5000, timeout=0.5):
                if message.error():
                    continue
                key = message.key() or b""
                if key.startswith(prefix) and (parsed := parse_marker(key, message.value() or b"")):
                    entries.append((parsed[1], parsed[2]))
            position = reader.position([TopicPartition(dedup_topic, partition)])[0].offset
            if position >= high:
                return entries
        raise TimeoutError(f"dedup partition {partition} not readable to its end within {deadline_s}s")
    finally:
        reader.close()
