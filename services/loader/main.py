"""The loader service: every loadable topic → its ClickHouse table, in exactly-once batches.

One batch = a contiguous offset range of one partition, flushed every
``TAGSTREAM_LOADER_FLUSH_SECONDS`` or at ``TAGSTREAM_LOADER_FLUSH_ROWS``. Its path:

    record intent     (topic, partition, first, last) into loader_batches (one statement for
                      all batches due at once)
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

Consuming and buffering run on the main thread, the steps up to the dead letters on a writer
thread (one round of due batches at a time, so inserts overlap the consuming of what follows),
and the commit back on the main thread once the round is written (while the writer starts on
the next round: a partition has at most two uncommitted intents).

A crash anywhere before the commit replays the range; the intent log cuts the replayed batches at
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
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import compress, pairwise
from operator import ne, or_

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from services.common.clickhouse import client_for
from services.common.kafka import make_consumer, make_producer, make_reader
from services.common.logs import configure_logging, get_logger
from services.common.runtime import StopFlag
from services.common.serde import Serde, SerdeError
from services.common.steps import Rejection, SourcePosition, dead_letter
from services.common.topics import DEAD_LETTERS, PROFILES, topic_name
from services.loader import ddl, metrics
from services.loader.analytics import api_file
from services.loader.api import AnalyticsServer
from services.loader.batcher import Batch, Batcher, Item
from services.loader.copies import CopyFilter
from services.loader.enriched import native_original, routes_for
from services.loader.faults import with_outage
from services.loader.native import NATIVE_SQL
from services.loader.rows import COLUMNS, ConversionError, FanOutRoute, Route
from services.loader.settings import LoaderSettings
from services.loader.sink import ClickHouseSink, Pending, SinkUnavailable, replay_cuts

log = get_logger("tagstream.loader")
# An envelope left to the fast path: (original bytes at the envelope's offset, person, original's
# record type, the decoded envelope, the consumed item) — the last two for the Python fallback.
NativeEntry = tuple[Item, str, str, dict, Item]
Bytes = bytes | None  # a message's key or value
# A batch inserted and its dead letters acknowledged, to commit: rows per table, records rejected.
Written = tuple[Batch, dict[str, int], int]
Converted = tuple[dict[str, list[Pending]], list[tuple[Item, Rejection]], dict[str, list[NativeEntry]]]
SERVICE = "loader"
# Commit errors worth retrying: the group coordinator is moving or the broker is restarting.
RETRIABLE_COMMIT = {
    KafkaError._WAIT_COORD,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.REQUEST_TIMED_OUT,
}
INFLIGHT_POLL_S = 0.005  # consume timeout while a round is being written (its commit follows)
COMMIT_RETRY_S = 300.0  # then exit: the orchestrator restarts us and the batch replays


def runs(
    messages: list[Message],
) -> Iterator[tuple[str, int, list[int], list[Bytes], list[Bytes]]]:
    """Consumed messages as columns, one run of consecutive messages of a partition at a time.

    Column by column with ``map`` over the C accessors: a Python step per message (an object, a
    dict lookup) cost more than ClickHouse needs to insert the row."""
    errors = list(map(Message.error, messages))
    if any(errors):
        for error in filter(None, errors):
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consume error", extra={"error": str(error)})
        messages = [m for m, error in zip(messages, errors, strict=True) if error is None]
    topics = list(map(Message.topic, messages))
    partitions = list(map(Message.partition, messages))
    offsets = list(map(Message.offset, messages))
    keys = list(map(Message.key, messages))
    values = list(map(Message.value, messages))
    # Where the partition changes, found without a tuple per message (their garbage collections
    # cost as much as the rest of this function in a process holding many objects).
    changes = map(or_, map(ne, partitions[1:], partitions), map(ne, topics[1:], topics))
    cuts = [0, *compress(range(1, len(messages)), changes), len(messages)]
    for start, end in pairwise(cuts):
        if start < end:
            yield topics[start], partitions[start], offsets[start:end], keys[start:end], values[start:end]


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
        # Found, not yet applied to a buffer: a crashed run's cuts from the first offset on.
        self._boundaries: dict[tuple[str, int], list[int]] = {}
        # Read at assignment: (start offset, recorded intents from there), so a partition's first
        # records need no query of their own (one query per rebalance, outside the consume loop).
        self._prefetched: dict[tuple[str, int], tuple[int, list[tuple[int, int]]]] = {}
        self.copies = CopyFilter(settings.loader_copy_window, self._read_before)
        self.profiles_topic = topic_name(PROFILES, settings)
        self._reader: Consumer | None = None  # reads back a partition's recent records (copies)
        self.ready = False
        self._stop = StopFlag()  # replaced by run()'s
        # Inserts run here, one round of due batches at a time (_write).
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loader-writer")
        self._inflight: Future[list[Written]] | None = None
        # Records read ahead while the writer works, at most (then consuming waits for it).
        self._buffer_cap = 2 * settings.loader_flush_rows

    # -- the loop ---------------------------------------------------------------------------
    def run(self, stop: StopFlag) -> None:
        self._stop = stop
        self.consumer.subscribe(list(self.routes), on_assign=self._on_assign, on_revoke=self._on_revoke)
        poll = min(0.5, self.settings.loader_flush_seconds / 4)
        try:
            while not stop.is_set:
                # A batch already due (a backlog read faster than it is written): do not wait
                # for more records first, hand it to the writer as soon as it is free.
                # A round in flight: look back soon, its commit must not wait out a poll that
                # finds nothing (the last round of a backlog waited up to `poll` for it).
                wait = 0.0 if self.batcher.has_due(time.monotonic()) else poll
                if self._inflight is not None:
                    wait = min(wait, INFLIGHT_POLL_S)
                consumed = list(runs(self.consumer.consume(5000, timeout=wait)))
                self._look_up_boundaries([(t, p, offsets[0]) for t, p, offsets, *_ in consumed])
                for run in consumed:
                    self._buffer(*run)
                self.ready = True
                metrics.BUFFERED.set(len(self.batcher))
                self._settle(wait=False)  # a round written meanwhile: commit it now
                if consumed and self._writer_busy() and len(self.batcher) < self._buffer_cap:
                    continue  # read on while the writer works: what is due goes in its next round
                self._write(self.batcher.due(time.monotonic()), stop)
            self._write(self.batcher.drain(time.monotonic()), stop)  # SIGTERM: finish, commit, close
            self._settle()
        finally:
            self._writer.shutdown(wait=True)

    def _write(self, batches: list[Batch], stop: StopFlag) -> None:
        """Hand due batches to the writer thread once the previous round is written, then commit
        that round while the writer starts on this one.

        The writer inserts (chDB releases the GIL) while this thread goes on consuming and
        buffering; commits stay on this thread (a synchronous commit from another thread waits
        for the consumer's poll to return). One round written at a time, so a slow ClickHouse
        holds consuming back instead of filling memory; a partition has at most two uncommitted
        intents (a crash while committing leaves both: the restart replays both cuts)."""
        if batches:
            written = self._collect()
            if self.settings.loader_test_unsafe_commit_first:  # fault injection: the bug, on purpose
                self._commit(batches)
            self._inflight = self._writer.submit(self.write_all, batches, stop)
            self._commit_written(written)

    def _writer_busy(self) -> bool:
        return self._inflight is not None and not self._inflight.done()

    def _settle(self, wait: bool = True) -> None:
        """Commit the round in flight once written (waiting for it unless ``wait`` is False);
        the writer's failure is raised here."""
        if self._inflight is not None and (wait or self._inflight.done()):
            self._commit_written(self._collect())

    def _collect(self) -> list[Written]:
        """The round in flight once written (waiting for it), not committed yet."""
        if self._inflight is None:
            return []
        inflight, self._inflight = self._inflight, None
        return inflight.result()

    def _commit_written(self, written: list[Written]) -> None:
        if not written:
            return
        self._commit([batch for batch, _loaded, _rejected in written])
        for batch, loaded, rejected in written:
            metrics.RECORDS.labels(batch.topic).inc(len(batch))
            for table, rows in loaded.items():
                metrics.ROWS.labels(table).inc(rows)
                metrics.BATCHES.labels(table).inc()
            log.info(
                "batch committed",
                extra={"token": batch.token, "rows": sum(loaded.values()), "rejected": rejected},
            )

    def _look_up_boundaries(self, starts: list[tuple[str, int, int]]) -> None:
        """A partition's first records after assignment: whether a crashed run left intents
        starting there (its replay boundaries), for all such partitions in one query, waiting out
        a ClickHouse outage (a batch cut before its boundary is known would get another token)."""
        firsts: dict[tuple[str, int], int] = {}
        for topic, partition, first in starts:
            tp = (topic, partition)
            if tp in self._checked or tp in firsts:
                continue  # known, or a later run of a partition seen earlier in this consume
            prefetched = self._prefetched.pop(tp, None)
            if prefetched is not None and first >= prefetched[0]:  # intents from `first` on are in it
                cuts = replay_cuts(prefetched[1], first)
                if cuts:
                    self._boundaries[tp] = cuts
                self._checked.add(tp)
            else:
                firsts[tp] = first
        if not firsts:
            return
        while True:
            try:
                self._boundaries.update(self.sink.pending_boundaries([(*tp, f) for tp, f in firsts.items()]))
                break
            except SinkUnavailable as exc:
                metrics.SINK_RETRIES.inc()
                log.warning(
                    "clickhouse unavailable", extra={"error": str(exc), "topic": next(iter(firsts))[0]}
                )
                if self._stop.wait(2.0):
                    return  # left unchecked: _buffer drops their records, never cuts them blind
        self._checked.update(firsts)

    def _buffer(
        self, topic: str, partition: int, offsets: list[int], keys: list[Bytes], values: list[Bytes]
    ) -> None:
        """Buffer a partition's consumed messages, cut at its replay boundary if it has one."""
        if (topic, partition) not in self._checked:  # stopping before its boundary was known
            return
        self.batcher.extend(topic, partition, offsets, keys, values, time.monotonic())
        boundaries = self._boundaries.pop((topic, partition), None)
        if boundaries:
            log.info("replaying batches", extra={"topic": topic, "partition": partition, "lasts": boundaries})
            self.batcher.set_boundaries(topic, partition, boundaries)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._checked.difference_update(tps)
        for tp in tps:
            self._boundaries.pop(tp, None)
            self._prefetched.pop(tp, None)
        self._prefetch_intents(consumer, partitions)

    def _prefetch_intents(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The intents of all newly assigned partitions from where each will be read (committed
        offset, else the log start), in one query; a partition whose first record is not covered
        (this failed, or the log start moved) is looked up when its records come."""
        if not partitions:
            return
        try:
            starts = []
            for tp in consumer.committed(partitions, timeout=10.0):
                offset = tp.offset
                if offset < 0:  # nothing committed: reading starts at the log start
                    offset, _high = consumer.get_watermark_offsets(tp, timeout=10.0, cached=False)
                starts.append((tp.topic, tp.partition, offset))
            intents = self.sink.pending_intents(starts)
        except (KafkaException, SinkUnavailable) as exc:
            # e.g. a topic created moments ago whose partitions have no leader yet
            log.info("replay boundaries not prefetched", extra={"error": str(exc)})
            return
        for topic, partition, start in starts:
            self._prefetched[(topic, partition)] = (start, intents[(topic, partition)])

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The round in flight commits while we still own its partitions; uncommitted buffers are
        # dropped: the next owner replays them from the committed offset.
        self._settle()
        tps = [(p.topic, p.partition) for p in partitions]
        self.batcher.drop(tps)
        self._checked.difference_update(tps)
        for tp in tps:
            self._prefetched.pop(tp, None)
        self.copies.forget(tps)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def _read_before(self, topic: str, partition: int, start: int, end: int) -> Iterator[Item]:
        """The records at offsets [start, end) of a partition, as the loader's consumer sees them."""
        if start >= end:
            return
        if self._reader is None:
            self._reader = make_reader(self.settings, **{"enable.partition.eof": True})
        self._reader.assign([TopicPartition(topic, partition, start)])
        try:
            while True:
                message = self._reader.poll(10.0)
                if message is None:
                    raise RuntimeError(f"no answer reading back {topic}[{partition}] from {start}")
                if message.error() is not None or message.offset() >= end:  # end of partition or window
                    return
                yield Item(message.offset(), message.key(), message.value())
                if message.offset() >= end - 1:
                    return
        finally:
            self._reader.unassign()

    # -- one batch, top to bottom -----------------------------------------------------------
    def write_all(self, batches: list[Batch], stop: StopFlag) -> list[Written]:
        """The writer thread's round: the intents of all due batches in one statement (chDB
        spends as long on one statement as on thousands of rows), then each batch. Returns the
        batches written, for :meth:`_settle` to commit."""
        intents = [(b.topic, b.partition, b.first, b.last) for b in batches]
        while True:  # ClickHouse away: retry, never insert without the intent
            try:
                self.sink.record_intents(intents)
                break
            except SinkUnavailable as exc:
                metrics.SINK_RETRIES.inc()
                log.warning("clickhouse unavailable", extra={"error": str(exc), "token": batches[0].token})
                if stop.wait(2.0):
                    return []  # nothing inserted, nothing committed: the next run replays them
        written = []
        for batch in batches:
            outcome = self.write(batch, stop)
            if outcome is None:
                break  # stopped while ClickHouse was away: the rest replays
            written.append((batch, *outcome))
        return written

    def write(self, batch: Batch, stop: StopFlag) -> tuple[dict[str, int], int] | None:
        """One batch whose intent is recorded (:meth:`write_all`): copies dropped, insert, dead
        letters acknowledged. Rows loaded per table and records rejected; None if stopped while
        ClickHouse was away (not committed: the next run replays it)."""
        route = self.routes[batch.topic]
        with metrics.FLUSH_SECONDS.time():
            # The intent (write_all) names the whole consumed range: a restart cuts its replay
            # there, and the same range gives the same copies, so the same rows and insert tokens.
            # `profiles` is latest-wins by offset (ReplacingMergeTree): a re-sent profile must stay
            # the latest row even when an earlier one has the same bytes.
            kept, copies = (batch, 0) if batch.topic == self.profiles_topic else self.copies.keep(batch)
            if copies:
                metrics.COPIES.labels(batch.topic).inc(copies)
            outcome = self.insert(route, kept, stop) if len(kept) else ({}, [])
            if outcome is None:
                return None
            loaded, rejections = outcome
            self._test_kill_hook()
            self.send_dead_letters(batch, rejections)
        return loaded, len(rejections)

    def _commit(self, batches: list[Batch]) -> None:
        """Commit after the insert; while the broker is away (a restart: "waiting for coordinator")
        retry the same commit rather than exit. Nothing else is inserted meanwhile, so a
        partition keeps at most one uncommitted batch."""
        offsets = [TopicPartition(b.topic, b.partition, b.last + 1) for b in batches]
        deadline = time.monotonic() + COMMIT_RETRY_S
        while True:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
                return
            except KafkaException as exc:
                error = exc.args[0]
                if not (error.retriable() or error.code() in RETRIABLE_COMMIT) or time.monotonic() > deadline:
                    raise
                log.warning("commit failed, retrying", extra={"error": str(error), "token": batches[0].token})
                time.sleep(1.0)  # back off while the group coordinator comes back

    def insert(
        self, route: Route | FanOutRoute, batch: Batch, stop: StopFlag
    ) -> tuple[dict[str, int], list[tuple[Item, Rejection]]] | None:
        """The rows (intent already recorded): decoded by ClickHouse where it can (native.py), else
        decoded and converted here. Returns rows loaded per table and the records that cannot load; None if
        stopped while ClickHouse was unavailable."""
        converted: Converted | None = None
        loaded: dict[str, int] = {}
        while True:  # ClickHouse away: retry the same batch (same tokens), never skip it
            try:
                if isinstance(route, Route) and self.sink.load_avro(
                    route.table, route.columns, route.topic.record_type or "", batch.topic, batch.partition,
                    batch.offsets, batch.values,
                ):  # fmt: skip
                    return {route.table: len(batch)}, []
                converted = converted or self.convert(route, batch)
                tables, rejections, natives = converted
                for table, entries in sorted(natives.items()):
                    offsets, values = [e[0].offset for e in entries], [e[0].value for e in entries]
                    persons = [e[1] for e in entries]
                    record_type = entries[0][2]
                    if self.sink.load_avro(
                        table, COLUMNS[table], record_type, batch.topic, batch.partition, offsets, values,
                        persons,
                    ):  # fmt: skip
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
            record = dead_letter(SERVICE, rejection.step, rejection, source, self._message_id(item.value))
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

    def _message_id(self, value: bytes | None) -> str | None:
        """The refused record's own message id when it decodes, so its dead letter names the
        record (an input id counted as dead-lettered, not lost); None: one derived from the
        position."""
        try:
            _, record = self.serde.decode(value or b"")
        except SerdeError:
            return None
        message_id = record.get("message_id") if isinstance(record, dict) else None
        return str(message_id) if message_id else None

    def _test_kill_hook(self) -> None:
        if self.settings.loader_test_kill_after_insert:
            log.warning("test hook: SIGKILL after insert, before commit")
            os.kill(os.getpid(), signal.SIGKILL)


def loader_consumer(settings: LoaderSettings, group_id: str | None = None) -> Consumer:
    """The loader's consumer (``group_id``: another group with the same settings, for benches)."""
    return make_consumer(
        settings,
        group_id or settings.loader_group_id,
        **{
            "session.timeout.ms": settings.loader_session_timeout_ms,
            "max.partition.fetch.bytes": settings.loader_fetch_partition_bytes,
        },
    )


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
    consumer = loader_consumer(settings)
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
        loader.close()
        consumer.close()
        producer.flush(10.0)
        client.close()
        log.info("loader stopped")
    return 0
