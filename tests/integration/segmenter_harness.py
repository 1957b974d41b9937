"""Run the segmenter as a real subprocess; write `enriched` envelopes, watch `segment-membership`."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from aiokafka.partitioner import murmur2
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from services.common.kafka import make_consumer, make_producer, make_reader, watermarks
from services.common.serde import Serde
from services.common.settings import Settings
from services.common.topics import DEAD_LETTERS, ENRICHED, SEGMENT_MEMBERSHIP, TopicSpec, topic_name
from tests.conftest import settings_env
from tests.helpers import ServiceProcess, wait_until


class SegmenterProcess(ServiceProcess):
    """One `tagstream run segmenter` process (``start`` waits for /readyz); stop() is SIGTERM,
    kill() is SIGKILL."""

    def __init__(self, settings: Settings, log: Path, definitions: Path, **extra_env: str) -> None:
        defaults = {
            "TAGSTREAM_SEGMENTER_DEFINITIONS_FILE": str(definitions),
            "TAGSTREAM_SEGMENTER_RELOAD_SECONDS": "0.5",
            "TAGSTREAM_SEGMENTER_BROKER_SESSION_TIMEOUT_S": "6",
        }
        super().__init__("segmenter", settings_env(settings), log, **{**defaults, **extra_env})
        self._log_from = 0  # where this run's lines start in the log (a restart appends)

    def start(self, ready_timeout: float = 90.0) -> SegmenterProcess:
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        super().start(ready_timeout)
        return self

    def wait_processing(self, timeout: float = 120.0) -> SegmenterProcess:
        """Until this run has restored every partition of `enriched` (ticks reach each one within a
        second of the assignment): from then on a record is processed as it arrives."""

        def restored() -> bool:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_from)
                text = log.read().decode(errors="replace")
            return text.count('"partition restored"') >= ENRICHED.partitions

        wait_until(restored, timeout=timeout, what="segmenter partitions restored")
        return self

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit code (None if it was never started)."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.terminate(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        return None if self.process is None else self.process.returncode


class Topics:
    """Writes enriched envelopes; collects membership changes and dead letters."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.serde = Serde()
        # keyed by person id with murmur2, like faust's sends (the enricher writes `enriched` with
        # faust): the segmenter routes merge hand-overs by the same partitioner
        self.producer = make_producer(settings, partitioner="murmur2_random")
        self.reader = make_reader(settings)
        self.reader.subscribe([topic_name(t, settings) for t in (SEGMENT_MEMBERSHIP, DEAD_LETTERS)])
        self.changes: list[dict[str, Any]] = []
        self.dead: list[dict[str, Any]] = []

    def send(self, *envelopes: dict[str, Any]) -> None:
        name = topic_name(ENRICHED, self.settings)
        for env in envelopes:
            value = self.serde.encode("enriched_event", env)
            self.producer.produce(name, key=env["person_id"].encode(), value=value)
        self.producer.flush(30)

    def poll(self) -> None:
        for message in self.reader.consume(500, timeout=0.2):
            if message.error():
                continue
            record_type, record = self.serde.decode(message.value())
            (self.dead if record_type == "dead_letter" else self.changes).append(record)

    def wait(self, condition: Any, what: str, timeout: float = 90.0) -> Any:
        def check() -> Any:
            self.poll()
            return condition()

        return wait_until(check, timeout=timeout, what=what)

    def seen(self, person: str, segment: str, change: str) -> list[dict[str, Any]]:
        return [
            c
            for c in self.changes
            if (c["person_id"], c["segment_id"], c["change"]) == (person, segment, change)
        ]

    def close(self) -> None:
        self.reader.close()


def produce_keyed(settings: Settings, spec: TopicSpec, values: list[tuple[bytes, bytes]]) -> None:
    """Write ``values`` (key, value) partitioned by murmur2 of the key, as faust (the enricher) does."""
    producer = make_producer(settings, partitioner="murmur2_random")
    errors: list[Any] = []
    for key, value in values:
        producer.produce(
            topic_name(spec, settings), value=value, key=key, on_delivery=lambda e, _m: e and errors.append(e)
        )
    assert producer.flush(30) == 0
    assert not errors


def partition_of(person: str, partitions: int = ENRICHED.partitions) -> int:
    """The partition faust's producer (and so the enricher) picks for a person id."""
    return (murmur2(person.encode()) & 0x7FFFFFFF) % partitions


def committed(settings: Settings, group: str, spec: TopicSpec) -> list[int]:
    """Offsets ``group`` committed on ``spec``'s topic, per partition (-1: none yet)."""
    name = topic_name(spec, settings)
    consumer = make_consumer(settings, group)
    try:
        parts = [TopicPartition(name, p) for p in range(spec.partitions)]
        return [tp.offset if tp.offset >= 0 else -1 for tp in consumer.committed(parts, timeout=10)]
    finally:
        consumer.close()


def ends(settings: Settings, spec: TopicSpec) -> list[int]:
    """High watermarks of ``spec``'s topic, per partition."""
    name = topic_name(spec, settings)
    reader = make_reader(settings)
    try:
        return [watermarks(reader, TopicPartition(name, p))[1] for p in range(spec.partitions)]
    finally:
        reader.close()


def memberships(settings: Settings) -> dict[str, set[str]]:
    """Current members per segment from the whole ``segment-membership`` topic: the last change of
    each (person, segment) in offset order (a person's changes share a partition), so changes
    repeated by a replay after a crash count once."""
    name = topic_name(SEGMENT_MEMBERSHIP, settings)
    serde, reader = Serde(), make_reader(settings)
    latest: dict[tuple[str, str], str] = {}
    try:
        high = dict(enumerate(ends(settings, SEGMENT_MEMBERSHIP)))
        reader.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p, end in high.items() if end > 0])
        left = {p for p, end in high.items() if end > 0}
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            for message in reader.consume(1000, timeout=0.5):
                if message.error():
                    continue
                change = serde.decode(message.value())[1]
                latest[(change["person_id"], change["segment_id"])] = change["change"]
                if message.offset() + 1 >= high[message.partition()]:
                    left.discard(message.partition())
        assert not left, f"segment-membership partitions {left} not read to their end"
    finally:
        reader.close()
    members: dict[str, set[str]] = {}
    for (person, segment), change in latest.items():
        if change == "entered":
            members.setdefault(segment, set()).add(person)
    return members
