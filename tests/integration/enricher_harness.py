"""Run the enricher as a real subprocess and watch its output topics (integration tests)."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition

from services.common.kafka import make_producer, make_reader, record_key, watermarks
from services.common.serde import Serde
from services.common.settings import Settings
from services.common.topics import DEAD_LETTERS, ENRICHED, PROFILES, VALID_TOPICS, topic_name
from tests.conftest import settings_env
from tests.helpers import ServiceProcess, wait_until

VALID_BY_TYPE = {spec.record_type: spec for spec in VALID_TOPICS}


class Enricher(ServiceProcess):
    """One `tagstream run enricher` process (``start`` waits for /readyz); stop() is SIGTERM,
    kill() is SIGKILL."""

    def __init__(self, settings: Settings, log: Path, **extra_env: str) -> None:
        super().__init__("enricher", settings_env(settings), log, **extra_env)

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.terminate(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


class Topics:
    """Produces validated records; collects enriched events, profiles and dead letters."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.serde = Serde()
        self.producer = make_producer(settings)
        self.reader = make_reader(settings)
        self.reader.subscribe([topic_name(t, settings) for t in (ENRICHED, PROFILES, DEAD_LETTERS)])
        self.enriched: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.profiles: dict[str, dict[str, Any]] = {}
        self.dead: list[dict[str, Any]] = []

    def send(self, record_type: str, *records: dict[str, Any]) -> None:
        name = topic_name(VALID_BY_TYPE[record_type], self.settings)
        for record in records:
            self.producer.produce(name, key=record_key(record), value=self.serde.encode(record_type, record))
        self.producer.flush(30)

    def send_raw(self, record_type: str, key: bytes, value: bytes) -> None:
        self.producer.produce(topic_name(VALID_BY_TYPE[record_type], self.settings), key=key, value=value)
        self.producer.flush(30)

    def poll(self) -> None:
        for message in self.reader.consume(500, timeout=0.2):
            if message.error():
                continue
            record_type, record = self.serde.decode(message.value())
            if record_type == "profile":
                self.profiles[record["person_id"]] = record
            elif record_type == "dead_letter":
                self.dead.append(record)
            else:
                self.enriched[record["person_id"]].append(record)

    def drain(self) -> None:
        """Read every output partition up to its end, so what is missing now was never written."""

        def caught_up() -> bool:
            self.poll()
            assigned = self.reader.assignment()
            for tp in self.reader.position(assigned):
                high = watermarks(self.reader, TopicPartition(tp.topic, tp.partition))[1]
                if high > 0 and tp.offset < high:  # an unread partition's position is negative
                    return False
            return bool(assigned)

        wait_until(caught_up, timeout=60, what="output topics read to their end")

    def wait(self, condition: Any, what: str, timeout: float = 90.0) -> Any:
        def check() -> Any:
            self.poll()
            return condition()

        return wait_until(check, timeout=timeout, what=what)

    def distinct_kinds(self, person: str) -> list[str]:
        """Kinds of the person's enriched records, each ``(message_id, kind)`` once, as consumers
        read them: after a crash the enricher re-sends replayed records, and a copy must be exact."""
        first: dict[tuple[str, str], dict[str, Any]] = {}
        for record in self.enriched[person]:
            key = (record["message_id"], record["kind"])
            assert first.setdefault(key, record) == record, f"{key}: a re-sent record differs"
        return [kind for _, kind in first]

    def profile_with(self, **fields: Any) -> dict[str, Any] | None:
        for profile in self.profiles.values():
            if all(profile.get(k) == v for k, v in fields.items()):
                return profile
        return None

    def close(self) -> None:
        self.reader.close()
