"""The loader service: every loadable topic → its ClickHouse table, in exactly-once batches.

One batch = a contiguous offset range of one partition, flushed every
``TAGSTREAM_LOADER_FLUSH_SECONDS`` or at ``TAGSTREAM_LOADER_FLUSH_ROWS``. Its path:

    record intent     (topic, partition, first, last) into loader_batches
    fast path         routes whose conversion is SQL (native.py: tags, events) on chDB: the
                      batch's Avro bodies framed into one container that ClickHouse decodes and
                      converts in one INSERT ... SELECT with the batch's token; anything unusual
                      (a refused row, mixed schemas) takes the path below instead, same token
    decode            Avro → record (undecodable → dead letter)
    convert           record → row(s) per table (rows.py, enriched.py; failure → dead letter)
    insert            per table (in name order) with insert_deduplication_token
                      "topic:partition:first-last" of the records with rows in that table; rows
                      ClickHouse refuses are isolated by halving (sink.py) → dead letters
    dead letters      produced and acknowledged
    commit            offset last+1, only now

A crash anywhere before the commit replays the range; the intent log cuts the replayed batch at
the same offsets, so its inserts carry the same tokens and ClickHouse drops what it already has
(conversion is deterministic, so each table gets the same offsets again; tokens are remembered
per table, so one token in several tables is fine).
Records of ``dead-letters`` that cannot load are logged and counted, never re-dead-lettered
(that would loop).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from services.common.clickhouse import client_for
from services.common.kafka import make_consumer, make_producer
from services.common.logs import configure_logging, get_logger
from services.common.runtime import StopFlag
from services.common.serde import Serde, SerdeError
from services.common.steps import Rejection, SourcePosition, dead_letter
from services.common.topics import DEAD_LETTERS, topic_name
from services.loader import ddl, metrics
from services.loader.analytics import api_file
from services.loader.api import AnalyticsServer
from services.loader.batcher import Batch, Batcher, Item
from services.loader.enriched import native_original, routes_for
from services.loader.faults import with_outage
from services.loader.native import NATIVE_SQL
from services.loader.rows import COLUMNS, ConversionError, FanOutRoute, Route
from services.loader.settings import LoaderSettings
from services.loader.sink import ClickHouseSink, Pending, SinkUnavailable

log = get_logger("tagstream.loader")
# An envelope left to the fast path: (original bytes at the envelope's offset, person, original's
# record type, the decoded envelope, the consumed item) — the last two for the Python fallback.
NativeEntry = tuple[Item, str, str, dict, Item]
Converted = tuple[dict[str, list[Pending]], list[tuple[Item, Rejection]], dict[str, list[NativeEntry]]]
SERVICE = "loader"


class Loader:
    def __init__(
        self, settings: LoaderSettings, sink: ClickHouseSink, consumer: Consumer, producer: Producer
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.consumer = consumer
        self.producer = producer
        self.serde = Serde(registry_url=settings.schema_registry_url)
        self.routes: dict[str, Route | FanOutRoute] = {
            topic_name(r.topic, settings): r for r in routes_for(settings.loader_source)
        }
        self.dead_letter_topic = topic_name(DEAD_LETTERS, settings)
        self.batcher = Batcher(settings.loader_flush_seconds, settings.loader_flush_rows)
        self._checked: set[tuple[str, int]] = set()  # partitions whose replay boundary is known
        self.ready = False

    # -- the loop ---------------------------------------------------------------------------
    def run(self, stop: StopFlag) -> None:
        self.consumer.subscribe(list(self.routes), on_assign=self._on_assign, on_revoke=self._on_revoke)
        poll = min(0.5, self.settings.loader_flush_seconds / 4)
        while not stop.is_set:
            messages = self.consumer.consume(num_messages=5000, timeout=poll)
            consumed: dict[tuple[str, int], list[Item]] = {}
            for message in messages:
                if message.error():
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("consume error", extra={"error": str(message.error())})
                    continue
                key = (message.topic(), message.partition())
                item = Item(message.offset(), message.key(), message.value())
                if key in consumed:
                    consumed[key].append(item)
                else:
                    consumed[key] = [item]
            for (topic, partition), items in consumed.items():
                self._buffer(topic, partition, items)
            self.ready = True
            for batch in self.batcher.due(time.monotonic()):
                self.process(batch, stop)
            metrics.BUFFERED.set(len(self.batcher))
        for batch in self.batcher.drain(time.monotonic()):  # SIGTERM: finish, commit, close
            self.process(batch, stop)

    def _buffer(self, topic: str, partition: int, items: list[Item]) -> None:
        """Buffer a partition's consumed messages; a partition's first after assignment looks up
        whether a crashed run left an intent starting there (its replay boundary)."""
        self.batcher.extend(topic, partition, items, time.monotonic())
        if (topic, partition) not in self._checked:
            self._checked.add((topic, partition))
            boundary = self.sink.pending_boundary(topic, partition, items[0].offset)
            if boundary is not None:
                log.info("replaying batch", extra={"topic": topic, "partition": partition, "last": boundary})
                self.batcher.set_boundary(topic, partition, boundary)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._checked.difference_update((p.topic, p.partition) for p in partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Uncommitted buffers are dropped: the next owner replays them from the committed offset.
        tps = [(p.topic, p.partition) for p in partitions]
        self.batcher.drop(tps)
        self._checked.difference_update(tps)

    # -- one batch, top to bottom -----------------------------------------------------------
    def process(self, batch: Batch, stop: StopFlag) -> None:
        route = self.routes[batch.topic]
        with metrics.FLUSH_SECONDS.time():
            if self.settings.loader_test_unsafe_commit_first:  # fault injection: the bug, on purpose
                self._commit(batch)
            outcome = self.insert(route, batch, stop)
            if outcome is None:
                return  # stopped while ClickHouse was away: not committed, the next run replays it
            loaded, rejections = outcome
            self._test_kill_hook()
            self.send_dead_letters(batch, rejections)
            self._commit(batch)
        metrics.RECORDS.labels(batch.topic).inc(len(batch.items))
        for table, rows in loaded.items():
            metrics.ROWS.labels(table).inc(rows)
            metrics.BATCHES.labels(table).inc()
        log.info(
            "batch committed",
            extra={"token": batch.token, "rows": sum(loaded.values()), "rejected": len(rejections)},
        )

    def _commit(self, batch: Batch) -> None:
        self.consumer.commit(
            offsets=[TopicPartition(batch.topic, batch.partition, batch.last + 1)], asynchronous=False
        )

    def insert(
        self, route: Route | FanOutRoute, batch: Batch, stop: StopFlag
    ) -> tuple[dict[str, int], list[tuple[Item, Rejection]]] | None:
        """Intent, then the rows: decoded by ClickHouse where it can (native.py), else decoded and
        converted here. Returns rows loaded per table and the records that cannot load; None if
        stopped while ClickHouse was unavailable."""
        converted: Converted | None = None
        loaded: dict[str, int] = {}
        while True:  # ClickHouse away: retry the same batch (same tokens), never skip it
            try:
                self.sink.record_intent(batch.topic, batch.partition, batch.first, batch.last)
                if isinstance(route, Route) and self.sink.load_avro(
                    route.table, route.columns, route.topic.record_type or "", batch.topic, batch.partition,
                    batch.items,
                ):  # fmt: skip
                    return {route.table: len(batch.items)}, []
                converted = converted or self.convert(route, batch)
                tables, rejections, natives = converted
                for table, entries in sorted(natives.items()):
                    items, persons = [e[0] for e in entries], [e[1] for e in entries]
                    if self.sink.load_avro(
                        table, COLUMNS[table], entries[0][2], batch.topic, batch.partition, items, persons
                    ):
                        loaded[table] = len(entries)
                    else:  # the Python path for this table, same offsets so the same token
                        rows = tables.get(table, []) + self._python_rows(route, entries, rejections)
                        tables[table] = sorted(rows, key=lambda p: p.offset)
                    del natives[table]  # done either way: a retry does not repeat it
                refused = {
                    table: self.sink.load(table, COLUMNS[table], batch.topic, batch.partition, pending)
                    for table, pending in sorted(tables.items())
                }
                break
            except SinkUnavailable as exc:
                metrics.SINK_RETRIES.inc()
                log.warning("clickhouse unavailable", extra={"error": str(exc), "token": batch.token})
                if stop.wait(2.0):
                    return None
        by_offset = {item.offset: item for item in batch.items}
        refused_offsets: set[int] = set()
        for table_refused in refused.values():
            for r in table_refused:
                if r.offset not in refused_offsets:  # one dead letter per record
                    refused_offsets.add(r.offset)
                    rejections.append(
                        (by_offset[r.offset], Rejection("clickhouse_rejected", r.message, "insert"))
                    )
        for t, pending in tables.items():
            loaded[t] = sum(len(p.rows) for p in pending) - len(refused[t])
        return loaded, rejections

    def _python_rows(
        self, route: Route | FanOutRoute, entries: list[NativeEntry], rejections: list[tuple[Item, Rejection]]
    ) -> list[Pending]:
        """Rows of envelopes the fast path did not take, converted here after all."""
        pending = []
        for item, _person, _type, record, source in entries:
            try:
                outputs = route.outputs(record, self.serde.decode)
            except ConversionError as exc:
                rejections.append((source, Rejection("unconvertible", str(exc), "convert")))
                continue
            pending += [Pending(item.offset, rows) for rows in outputs.values()]
        return pending

    def convert(self, route: Route | FanOutRoute, batch: Batch) -> Converted:
        """Rows per table, each record's rows tagged with its offset; the records that cannot load;
        and (``enriched`` on chDB) the envelopes whose original ClickHouse converts itself, per
        table, left undecoded: their original's bytes, person and record type."""
        tables: dict[str, list[Pending]] = {}
        rejections: list[tuple[Item, Rejection]] = []
        natives: dict[str, list[NativeEntry]] = {}
        fast = isinstance(route, FanOutRoute) and self.sink.native.enabled
        for item in batch.items:
            try:
                record_type, record = self.serde.decode(item.value)
            except SerdeError as exc:
                rejections.append((item, Rejection("undecodable", str(exc), "decode")))
                continue
            if record_type != route.topic.record_type:
                message = f"{record_type} record on a {route.topic.record_type} topic"
                rejections.append((item, Rejection("unexpected_type", message, "decode")))
                continue
            target = native_original(record, NATIVE_SQL) if fast else None
            if target is not None:
                entry = (
                    Item(item.offset, None, record["original"]),
                    record["person_id"],
                    target[1],
                    record,
                    item,
                )
                natives.setdefault(target[0], []).append(entry)
                continue
            try:
                outputs = route.outputs(record, self.serde.decode)
            except ConversionError as exc:
                rejections.append((item, Rejection("unconvertible", str(exc), "convert")))
                continue
            for table, rows in outputs.items():
                tables.setdefault(table, []).append(Pending(item.offset, rows))
        return tables, rejections, natives

    def send_dead_letters(self, batch: Batch, rejections: list[tuple[Item, Rejection]]) -> None:
        if not rejections:
            return
        for item, rejection in rejections:
            metrics.REJECTED.labels(rejection.step, rejection.reason).inc()
            if batch.topic == self.dead_letter_topic:  # never dead-letter a dead letter: it would loop
                log.error(
                    "dead letter not loadable", extra={"offset": item.offset, "reason": rejection.reason}
                )
        if batch.topic == self.dead_letter_topic:
            return
        failures: list[str] = []
        for item, rejection in rejections:
            source = SourcePosition(batch.topic, batch.partition, item.offset, item.key, item.value)
            record = dead_letter(SERVICE, rejection.step, rejection, source)
            self.producer.produce(
                self.dead_letter_topic,
                value=self.serde.encode("dead_letter", record, topic=self.dead_letter_topic, check=False),
                key=item.key,
                on_delivery=lambda err, _msg: err and failures.append(str(err)),
            )
        self.producer.flush(30.0)
        if failures or len(self.producer):
            # Not committing: the batch replays and its dead letters are produced again.
            raise RuntimeError(f"dead letters not acknowledged: {failures[:1] or 'flush timed out'}")

    def _test_kill_hook(self) -> None:
        if self.settings.loader_test_kill_after_insert:
            log.warning("test hook: SIGKILL after insert, before commit")
            os.kill(os.getpid(), signal.SIGKILL)


def run() -> int:
    settings = LoaderSettings()
    configure_logging(SERVICE, settings.log_level)
    stop = StopFlag().install()
    client = client_for(settings)
    if settings.loader_test_clickhouse_down_file is not None:  # fault injection (make chaos)
        client = with_outage(client, settings.loader_test_clickhouse_down_file)
    if settings.clickhouse_cluster:  # ReplicatedMergeTree ON CLUSTER + Distributed tables
        applied = ddl.apply_on_cluster(client, settings.clickhouse_cluster, settings.loader_ttl_days)
    else:
        applied = ddl.apply(client, settings.loader_ttl_days)
    log.info("migrations applied", extra={"applied": applied})
    lock = threading.Lock()
    sink = ClickHouseSink(client, lock)
    consumer = make_consumer(
        settings, settings.loader_group_id, **{"session.timeout.ms": settings.loader_session_timeout_ms}
    )
    producer = make_producer(settings)
    loader = Loader(settings, sink, consumer, producer)
    server = AnalyticsServer(settings.loader_host, settings.loader_port, client, lock, lambda: loader.ready)
    server.start()
    marker = api_file(settings)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"url": server.url, "pid": os.getpid()}))
    log.info(
        "loader started",
        extra={"api": server.url, "topics": list(loader.routes), "source": settings.loader_source},
    )
    try:
        loader.run(stop)
    finally:
        marker.unlink(missing_ok=True)
        server.stop()
        consumer.close()
        producer.flush(10.0)
        client.close()
        log.info("loader stopped")
    return 0
