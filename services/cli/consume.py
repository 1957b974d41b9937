"""``tagstream consume``: Kafka -> decoded JSON lines (the same form ``produce`` reads)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

from services.common.kafka import make_reader
from services.common.serde import Serde, SerdeError
from services.common.settings import Settings


def consume(
    settings: Settings,
    topic: str,
    serde: Serde,
    *,
    from_beginning: bool,
    max_records: int | None,
    timeout_s: float,
) -> Iterator[tuple[str, dict[str, Any]] | SerdeError]:
    """Yield decoded records (or the decode error) until ``max_records`` or ``timeout_s`` of silence."""
    consumer = make_reader(settings)
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise SerdeError(f"topic {topic!r} does not exist")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in metadata.topics[topic].partitions])
        seen = 0
        quiet_since = time.monotonic()
        while max_records is None or seen < max_records:
            batch = consumer.consume(num_messages=500, timeout=0.2)
            if not batch:
                if time.monotonic() - quiet_since > timeout_s:
                    return
                continue
            quiet_since = time.monotonic()
            for message in batch:
                if message.error():
                    continue
                try:
                    yield serde.decode(message.value())
                except SerdeError as exc:
                    yield exc
                seen += 1
                if max_records is not None and seen >= max_records:
                    return
    finally:
        consumer.close()
