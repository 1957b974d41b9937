"""Test-side Kafka I/O: produce records as a producer would, read a topic back (committed only)."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from services.common.kafka import make_producer, make_reader, record_key
from services.common.serde import Serde
from services.common.settings import Settings
from services.common.topics import TopicSpec, topic_name


def produce_records(settings: Settings, spec: TopicSpec, records: list[dict[str, Any] | bytes]) -> None:
    """Produce decoded records (encoded with the spec's type) or raw bytes, keyed by device."""
    serde = Serde(registry_url=settings.schema_registry_url)
    producer = make_producer(settings)
    name = topic_name(spec, settings)
    for record in records:
        if isinstance(record, bytes):
            producer.produce(name, record)
        else:
            producer.produce(name, serde.encode(spec.record_type, record, topic=name), record_key(record))
    assert producer.flush(30) == 0


def read_topic(
    settings: Settings, spec: TopicSpec, expect: int, timeout: float = 60.0
) -> list[tuple[bytes | None, dict]]:
    """Read (key, decoded record) from the beginning until ``expect`` records, then a short quiet
    period to catch extras; fail if fewer arrive before ``timeout``."""
    serde = Serde(registry_url=settings.schema_registry_url)
    reader = make_reader(settings, **{"isolation.level": "read_committed"})
    name = topic_name(spec, settings)
    try:
        partitions = reader.list_topics(name, timeout=10).topics[name].partitions
        reader.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
        out: list[tuple[bytes | None, dict]] = []
        deadline = time.monotonic() + timeout
        quiet_until = None
        while True:
            for message in reader.consume(500, 0.2):
                if not message.error():
                    out.append((message.key(), serde.decode(message.value())[1]))
            now = time.monotonic()
            if len(out) >= expect:
                quiet_until = quiet_until or now + 1.0
                if now >= quiet_until:
                    return out
            elif now > deadline:
                raise AssertionError(f"{name}: {len(out)} records after {timeout}s, expected {expect}")
    finally:
        reader.close()
