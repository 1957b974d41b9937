"""Read deduplication markers back from ``ingest-dedup`` when raw partitions are assigned."""

from __future__ import annotations

import time
from collections import defaultdict

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from services.common.kafka import make_reader, watermarks
from services.common.settings import Settings
from services.ingest.dedupe import Partition, read_marker


def read_markers(
    settings: Settings, dedup_topic: str, wanted: set[Partition], deadline_s: float = 60.0
) -> dict[Partition, list[tuple[str, int]]]:
    """For each wanted (raw topic, partition): its committed markers as (message_id, first_seen_ms).

    One reader covers every dedup partition needed, read to its end as it is now. Records of an
    open transaction (a producer killed mid-batch) hold the read back until that transaction is
    aborted — by our own ``init_transactions`` on restart, or by the broker's transaction timeout.
    """
    found: dict[Partition, list[tuple[str, int]]] = defaultdict(list)
    reader = make_reader(settings, **{"isolation.level": "read_committed"})
    try:
        ends: dict[int, int] = {}
        for partition in sorted({p for _, p in wanted}):
            low, high = watermarks(reader, TopicPartition(dedup_topic, partition))
            if high > low:
                ends[partition] = high
        if not ends:
            return found
        reader.assign([TopicPartition(dedup_topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + deadline_s
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"dedup partitions {sorted(ends)} not readable to their end in {deadline_s}s"
                )
            for message in reader.consume(num_messages=5000, timeout=0.2):
                if message.error():
                    continue
                for topic, message_id, seen in read_marker(message.key() or b"", message.value() or b""):
                    if (topic, message.partition()) in wanted:
                        found[(topic, message.partition())].append((message_id, seen))
            positions = reader.position([TopicPartition(dedup_topic, p) for p in ends])
            for tp in positions:
                if tp.offset >= ends[tp.partition]:
                    del ends[tp.partition]
        return found
    finally:
        reader.close()
