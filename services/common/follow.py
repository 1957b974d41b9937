"""Follow a compacted topic: read every partition from its beginning in a background thread, hand
each record to a callback, keep following. For small tables every instance keeps in memory
(short links in the collector, the geofence catalogue in the enricher).

``wait_caught_up`` tells when the records that were on the topic at start are all applied, so a
service can start with the whole table rather than an empty one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from services.common.kafka import make_reader
from services.common.logs import get_logger
from services.common.settings import Settings

log = get_logger(__name__)
OnRecord = Callable[[bytes, bytes | None], None]  # key, value (None: a tombstone)


class TopicFollower:
    def __init__(self, settings: Settings, topic: str, on_record: OnRecord, name: str) -> None:
        self.topic, self.name = topic, name
        self._settings, self._on_record = settings, on_record
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=name, daemon=True)

    def start(self) -> TopicFollower:
        self._thread.start()
        return self

    def wait_caught_up(self, timeout: float) -> bool:
        return self._caught_up.wait(timeout)

    @property
    def caught_up(self) -> bool:
        return self._caught_up.is_set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _follow(self) -> None:
        # End-of-partition events mark where the topic ended when we started reading it.
        consumer = make_reader(self._settings, **{"enable.partition.eof": True})
        try:
            partitions = self._partitions(consumer)
            if partitions is None:
                return
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
            at_end: set[int] = set()
            while not self._stop.is_set():
                message = consumer.poll(0.5)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition())
                        if at_end >= set(partitions):
                            self._caught_up.set()
                    continue
                key = message.key()
                if key is None:
                    continue  # not a table record: nothing names what it would replace
                try:
                    self._on_record(key, message.value())
                except Exception:  # one bad record must not stop the table: skip it, say where
                    log.exception(f"{self.name}: record skipped", extra={"offset": message.offset()})
        except Exception:  # the table must never take the service down; it stops following
            log.exception(f"{self.name}: follower stopped")
        finally:
            self._caught_up.set()  # nobody waits forever on a follower that is gone
            consumer.close()

    def _partitions(self, consumer: Consumer) -> list[int] | None:
        """The topic's partitions, waiting (until stopped) while it does not exist yet."""
        while not self._stop.is_set():
            try:
                metadata = consumer.list_topics(self.topic, timeout=5).topics[self.topic]
                if metadata.error is None and metadata.partitions:
                    return list(metadata.partitions)
            except (KafkaException, KeyError):
                pass
            if self._stop.wait(1.0):
                return None
        return None
