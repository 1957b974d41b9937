"""confluent-kafka client factories and topic administration.

Producers are idempotent with ``acks=all``; consumers never auto-commit and never auto-store
offsets: a service stores an offset only after every output of that record is acknowledged.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from services.common.security import client_config as security_config
from services.common.settings import Settings
from services.common.topics import ALL_TOPICS, TopicSpec, topic_name


def client_config(settings: Settings) -> dict[str, Any]:
    """What every confluent-kafka client here starts from: brokers, SASL/TLS, then any extra
    librdkafka settings (``TAGSTREAM_KAFKA_SECURITY``)."""
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        **security_config(settings),
        **settings.kafka_security,
    }


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    config = {
        **client_config(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        **overrides,
    }
    return Producer(config)


def make_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    config = {
        **client_config(settings),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        **overrides,
    }
    return Consumer(config)


def produce_acknowledged(
    settings: Settings,
    messages: Iterable[tuple[str, bytes | None, bytes | None]],
    on_delivered: Callable[[int], Any] = lambda n: None,
    timeout: float = 120.0,
) -> None:
    """Produce (topic, key, value) messages in order (value None: a tombstone); return once all are
    acknowledged, else raise."""
    producer = make_producer(settings)
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))
        else:
            on_delivered(1)

    for topic, key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.2)
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining or failures:
        raise RuntimeError(f"{remaining} records unacknowledged, {len(failures)} failed: {failures[:3]}")


# Errors librdkafka does not flag retriable that still pass once metadata settles.
_TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


def make_reader(settings: Settings, **overrides: Any) -> Consumer:
    """A group-less consumer for tools (consume, inspect): it assigns partitions itself."""
    return make_consumer(settings, f"tagstream-reader-{uuid.uuid4().hex}", **overrides)


def watermarks(consumer: Consumer, tp: TopicPartition, deadline_s: float = 30.0) -> tuple[int, int]:
    """(low, high) offsets of a partition, retrying while the broker says so (a topic just created,
    a leader moving): a service must not crash on a transient ``NOT_LEADER_FOR_PARTITION``."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=min(10.0, max(1.0, deadline_s)))
        except KafkaException as exc:
            error = exc.args[0]
            transient = error.retriable() or error.code() in _TRANSIENT
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # back off before asking the broker again


def read_tail(
    settings: Settings, topics: Iterable[str], partition: int, records: int, timeout: float, **overrides: Any
) -> list[bytes | None] | None:
    """The values of the last ``records`` records of partition ``partition`` of each topic, read
    with a group-less consumer; None when the ends were not reached within ``timeout`` seconds.

    A service taking over a partition reads what the previous owner last produced there (it is
    the only writer of that partition) to recognise a replayed output."""
    reader = make_reader(settings, **{"enable.partition.eof": True, **overrides})
    try:
        deadline = time.monotonic() + timeout
        assignment, ends = [], {}
        for name in topics:
            left = max(0.5, deadline - time.monotonic())
            low, high = watermarks(reader, TopicPartition(name, partition), left)
            if high > low:
                assignment.append(TopicPartition(name, partition, max(low, high - records)))
                ends[name] = high
        values: list[bytes | None] = []
        if not assignment:
            return values
        reader.assign(assignment)
        pending = set(ends)
        while pending and time.monotonic() < deadline:
            for message in reader.consume(1000, timeout=0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:  # this topic is read to its end
                        pending.discard(message.topic())
                    continue
                values.append(message.value())
                if message.offset() + 1 >= ends[message.topic()]:
                    pending.discard(message.topic())
        return None if pending else values
    finally:
        reader.close()


def read_before(
    settings: Settings, topic: str, partition: int, offset: int, records: int, timeout: float
) -> list[tuple[int, bytes | None]] | None:
    """(offset, value) of the records at most ``records`` offsets before ``offset`` in one
    partition, oldest first, read with a group-less consumer; None when ``offset`` was not reached
    within ``timeout`` seconds.

    A consumer resuming at its committed ``offset`` reads what it processed just before, to
    recognise a later copy of one of those records (services/enricher/hop_copies.py)."""
    reader = make_reader(settings, **{"enable.partition.eof": True})
    try:
        deadline = time.monotonic() + timeout
        low, _ = watermarks(reader, TopicPartition(topic, partition), max(0.5, timeout))
        start = max(low, offset - records)
        if start >= offset:
            return []
        reader.assign([TopicPartition(topic, partition, start)])
        found: list[tuple[int, bytes | None]] = []
        while time.monotonic() < deadline:
            for message in reader.consume(1000, timeout=0.5):
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:  # nothing more to read
                        return found
                    continue
                if message.offset() >= offset:
                    return found
                found.append((message.offset(), message.value()))
                if message.offset() + 1 >= offset:
                    return found
        return None
    finally:
        reader.close()


def make_admin(settings: Settings) -> AdminClient:
    return AdminClient(client_config(settings))


@dataclass(frozen=True)
class TopicStatus:
    name: str
    action: str  # "created", "exists", "mismatch"
    detail: str = ""


def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec] = ALL_TOPICS, timeout: float = 30.0
) -> list[TopicStatus]:
    """Create missing topics; report existing ones whose partition count differs. Idempotent."""
    admin = make_admin(settings)
    existing = admin.list_topics(timeout=timeout).topics
    results: list[TopicStatus] = []
    to_create: list[NewTopic] = []
    for spec in specs:
        name = topic_name(spec, settings)
        if name in existing:
            have = len(existing[name].partitions)
            if have < spec.partitions:
                results.append(
                    TopicStatus(name, "mismatch", f"{have} partitions, declared {spec.partitions}")
                )
            else:
                results.append(TopicStatus(name, "exists", f"{have} partitions"))
            continue
        to_create.append(
            NewTopic(name, num_partitions=spec.partitions, replication_factor=-1, config=spec.config())
        )
    if to_create:
        for name, future in admin.create_topics(to_create, operation_timeout=timeout).items():
            try:
                future.result()
                results.append(TopicStatus(name, "created"))
            except KafkaException as exc:
                if exc.args[0].name() == "TOPIC_ALREADY_EXISTS":  # raced with another ensure
                    results.append(TopicStatus(name, "exists"))
                else:
                    raise
    return results


def topic_config(settings: Settings, name: str) -> dict[str, str]:
    admin = make_admin(settings)
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    entries = admin.describe_configs([resource])[resource].result()
    return {key: entry.value for key, entry in entries.items()}


def cluster_reachable(settings: Settings, timeout: float = 3.0) -> bool:
    # log_level 0: a probe of a broker still starting would otherwise log "connection refused".
    try:
        AdminClient({**client_config(settings), "log_level": 0}).list_topics(timeout=timeout)
        return True
    except KafkaException:
        return False


def record_key(record: dict[str, Any]) -> bytes | None:
    """The partition key that keeps one device's (or else one person's) records in order."""
    identity = record.get("identity") or {}
    for field in ("install_id", "anonymous_id", "external_user_id", "email", "phone"):
        if identity.get(field):
            return f"{field}:{identity[field]}".encode()
    return None
