"""ingest: raw topics in, validated topics and dead letters out, exactly once.

Per batch, inside one Kafka transaction:

    consume a batch of raw records
      for each record: size → decode → normalise → validate → deduplicate → encode  (pipeline.py)
      produce: valid record → <raw>.valid | refusal → dead-letters | duplicate → nothing
    add the consumer offsets to the transaction
    produce the dedupe markers of the records passed, one per raw partition         (dedupe.py)
    commit it                                                                       (commit last)

Outputs, dead letters, markers and offsets become visible together or not at all, so a crash at
any point neither loses a record nor passes it twice; consumers downstream read committed.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from confluent_kafka import KafkaException, Message, TopicPartition

from services.common.kafka import make_consumer, make_producer
from services.common.logs import configure_logging, get_logger
from services.common.runtime import HealthServer, StopFlag
from services.common.serde import Serde
from services.common.steps import SourcePosition
from services.common.topics import DEAD_LETTERS, INGEST_DEDUP, RAW_TOPICS, VALID_TOPIC_FOR_RAW, topic_name
from services.ingest import metrics
from services.ingest.dedupe import DedupeStore, batch_markers
from services.ingest.definitions import DefinitionsFileWatcher
from services.ingest.metrics import BatchCounts
from services.ingest.pipeline import Context, Duplicate, Refused, Valid, process
from services.ingest.restore import read_markers
from services.ingest.settings import DEFAULT_HEALTH_PORT, IngestSettings
from services.ingest.validate import DAY_MS, Limits

log = get_logger("services.ingest")


def limits_from(settings: IngestSettings) -> Limits:
    return Limits(
        future_tolerance_ms=settings.ingest_future_tolerance_s * 1000,
        horizon_ms=settings.ingest_horizon_days * DAY_MS,
        backfill_horizon_ms=settings.ingest_backfill_horizon_days * DAY_MS,
        max_properties_bytes=settings.ingest_max_properties_bytes,
        max_properties_keys=settings.ingest_max_properties_keys,
        max_properties_depth=settings.ingest_max_properties_depth,
        max_tag_name=settings.ingest_max_tag_name,
        max_string_value=settings.ingest_max_string_value,
    )


class IngestService:
    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.stop = StopFlag()
        self.bare = {topic_name(spec, settings): spec.name for spec in RAW_TOPICS}
        self.dedup_topic = topic_name(INGEST_DEDUP, settings)
        self.dead_letter_topic = topic_name(DEAD_LETTERS, settings)
        self.valid_topics = {spec.name: topic_name(spec, settings) for spec in VALID_TOPIC_FOR_RAW.values()}
        self.serde = Serde(registry_url=settings.schema_registry_url)
        self.definitions = DefinitionsFileWatcher(
            settings.definitions_path, settings.ingest_definitions_reload_s
        )
        self.dedupe = DedupeStore(settings.ingest_dedupe_window_s * 1000)
        self.ctx = Context(
            self.serde,
            limits_from(settings),
            self.definitions.current,
            self.dedupe,
            settings.ingest_max_record_bytes,
        )
        # A stable transactional id per instance: a restarted instance fences its killed
        # predecessor and aborts its open transaction at once (no wait for the timeout).
        instance = settings.instance_id or socket.gethostname()
        self.producer = make_producer(
            settings,
            **{
                "transactional.id": f"{settings.topic_prefix}{settings.ingest_group_id}-{instance}",
                "transaction.timeout.ms": 30000,
                # The coordinator refuses a new transaction's first AddPartitionsToTxn while it
                # still writes the previous one's commit markers (CONCURRENT_TRANSACTIONS, nearly
                # every batch here); librdkafka retries after retry.backoff.ms, 100 ms by default,
                # which stalled the commit of batches that take ~20 ms to process. Repeated
                # failures still back off exponentially up to retry.backoff.max.ms (1 s).
                "retry.backoff.ms": 10,
            },
        )
        consumer_config: dict[str, Any] = {"isolation.level": "read_committed"}
        if settings.instance_id:
            # Static membership: a restarted instance takes its partitions back at once, without
            # waiting for the dead member's session to time out.
            consumer_config["group.instance.id"] = f"{settings.ingest_group_id}-{settings.instance_id}"
        group = f"{settings.topic_prefix}{settings.ingest_group_id}"
        self.consumer = make_consumer(settings, group, **consumer_config)
        self.ready = False
        self._last_lag_check = 0.0

    # -- partition ownership ------------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        now_ms = int(time.time() * 1000)
        wanted = {(self.bare[tp.topic], tp.partition) for tp in partitions}
        markers = read_markers(self.settings, self.dedup_topic, wanted)
        for topic, partition in sorted(wanted):
            held = self.dedupe.load((topic, partition), markers.get((topic, partition), []), now_ms)
            log.info("partition assigned", extra={"topic": topic, "partition": partition, "dedupe": held})

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.dedupe.drop((self.bare[tp.topic], tp.partition))
            log.info("partition revoked", extra={"topic": tp.topic, "partition": tp.partition})

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> int:
        self.producer.init_transactions(60)
        self.consumer.subscribe(
            list(self.bare), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        self.ready = True
        log.info("ingest started", extra={"topics": sorted(self.bare)})
        try:
            while not self.stop.is_set:
                batch = self.consumer.consume(
                    self.settings.ingest_batch_size, self.settings.ingest_batch_timeout_s
                )
                self.ctx.definitions = self.definitions.refresh()
                metrics.DECLARED_EVENTS.set(len(self.ctx.definitions.events))
                batch = [m for m in batch if not m.error()]
                if batch:
                    self._transact(batch)
                self._housekeeping()
        finally:
            self.ready = False
            self.consumer.close()  # leaves the group; the last batch was committed above
            self.producer.flush(30)
            log.info("ingest stopped")
        return 0

    def _transact(self, batch: list[Message]) -> None:
        started = time.monotonic()
        passed: dict[tuple[str, int], list[str]] = {}
        counts = BatchCounts()
        self.producer.begin_transaction()
        try:
            now_ms = int(time.time() * 1000)
            for message in batch:
                self._handle(message, now_ms, passed, counts)
            offsets = _next_offsets(batch)
            self.producer.poll(0)  # delivery reports once per batch: the commit waits for them anyway
            # Offsets before the markers: the markers' partitions are registered with the
            # transaction (AddPartitionsToTxn) when produced, and an AddOffsetsToTxn sent while
            # that is pending is refused (CONCURRENT_TRANSACTIONS) and retried after a backoff.
            self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
            self._mark(passed, offsets, now_ms)
            self.producer.commit_transaction(60)
        except KafkaException as exc:
            # Nothing of this batch is visible: undo its dedupe entries and read it again.
            log.warning("batch aborted; retrying", extra={"error": str(exc)})
            metrics.TRANSACTION_ABORTS.inc()
            for partition, message_ids in passed.items():
                self.dedupe.forget(partition, message_ids)
            self._abort()
            for tp in _first_offsets(batch):
                self.consumer.seek(tp)
            return
        counts.publish()
        metrics.BATCH_SECONDS.observe(time.monotonic() - started)
        now = time.time()
        metrics.observe_many(metrics.RECORD_LATENCY, [max(0.0, now - m.timestamp()[1] / 1000) for m in batch])

    def _abort(self) -> None:
        """Abort the open transaction; librdkafka says when a timed-out abort must be called
        again (a broker restart), rather than give up the process."""
        deadline = time.monotonic() + 300
        while True:
            try:
                self.producer.abort_transaction(60)
                return
            except KafkaException as exc:
                if not exc.args[0].retriable() or time.monotonic() > deadline:
                    raise
                log.warning("abort timed out; retrying", extra={"error": str(exc)})

    def _handle(
        self,
        message: Message,
        now_ms: int,
        passed: dict[tuple[str, int], list[str]],
        counts: BatchCounts,
    ) -> None:
        bare = self.bare[message.topic()]
        partition = message.partition()
        counts.records_in[bare] += 1
        source = SourcePosition(bare, partition, message.offset(), message.key(), message.value())
        outcome = process(source, bare, now_ms, self.ctx)
        if isinstance(outcome, Valid):
            self.producer.produce(self.valid_topics[outcome.output.name], outcome.value, outcome.key)
            passed.setdefault((bare, partition), []).append(outcome.message_id)
            counts.records_out[outcome.output.name] += 1
        elif isinstance(outcome, Refused):
            letter = outcome.dead_letter
            value = self.serde.encode("dead_letter", letter, topic=self.dead_letter_topic, check=False)
            self.producer.produce(self.dead_letter_topic, value, letter["message_id"].encode())
            counts.dead_letters[(letter["step"], letter["reason"])] += 1
        elif isinstance(outcome, Duplicate):
            counts.deduplicated[bare] += 1

    def _mark(
        self, passed: dict[tuple[str, int], list[str]], offsets: list[TopicPartition], now_ms: int
    ) -> None:
        """Dedupe markers for what the batch passed: a few records per raw partition, not one each."""
        next_offset = {(self.bare[tp.topic], tp.partition): tp.offset for tp in offsets}
        for (bare, partition), message_ids in passed.items():
            for key, value in batch_markers(bare, next_offset[(bare, partition)], now_ms, message_ids):
                self.producer.produce(self.dedup_topic, value, key, partition=partition)

    def _housekeeping(self) -> None:
        if time.monotonic() - self._last_lag_check < 10:
            return
        self._last_lag_check = time.monotonic()
        self.dedupe.expire(int(time.time() * 1000))
        metrics.DEDUPE_ENTRIES.set(self.dedupe.size())
        try:
            for tp in self.consumer.position(self.consumer.assignment()):
                # The high watermark the last fetch brought: asking the broker per partition
                # (cached=False) stalled the record loop for a round trip per partition.
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if tp.offset >= 0 and high >= 0:
                    metrics.CONSUMER_LAG.labels(self.bare[tp.topic], tp.partition).set(
                        max(0, high - tp.offset)
                    )
        except KafkaException:
            pass  # lag is informational; the broker may be briefly away


def _next_offsets(batch: list[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in batch:
        last[(m.topic(), m.partition())] = max(m.offset(), last.get((m.topic(), m.partition()), -1))
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def _first_offsets(batch: list[Message]) -> list[TopicPartition]:
    first: dict[tuple[str, int], int] = {}
    for m in batch:
        key = (m.topic(), m.partition())
        first[key] = min(m.offset(), first.get(key, m.offset()))
    return [TopicPartition(t, p, o) for (t, p), o in first.items()]


def run() -> int:
    settings = IngestSettings()
    configure_logging("ingest", settings.log_level)
    service = IngestService(settings)
    service.stop.install()
    health = HealthServer(
        settings.health_host, settings.health_port_or(DEFAULT_HEALTH_PORT), ready=lambda: service.ready
    ).start()
    try:
        return service.run()
    finally:
        health.stop()
