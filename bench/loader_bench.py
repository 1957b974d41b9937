"""Loader throughput: rows/s loaded end to end vs inserting the same rows straight from Python.

    .venv/bin/python bench/loader_bench.py [--rows 200000] [--batch 10000] [--source valid]

On the harness broker (``bench_broker``: a local one in a temp dir, or ``TAGSTREAM_KAFKA_BOOTSTRAP``)
it produces tag hits as Avro to ``tags.valid`` (or inside enricher envelopes to ``enriched``),
then in one process and one chDB data dir:

1. consume: a bare confluent consumer reading the same records (the Kafka side alone, a ceiling);
2. direct: the same rows, already converted, inserted with ``client.insert`` into a copy of the
   ``tags`` table in batches of the loader's size (the best Python can do), once before and once
   after the loader run, keeping the faster (other processes share the CPU);
3. loader: the real :class:`Loader` consuming, framing (or decoding and converting), recording
   its intents, inserting with dedup tokens and committing, timed from its first consumed record
   to its last commit (group join excluded).

Prints the loader/direct ratio of rows/s (target >= 0.7) and of CPU seconds per row spent in
this process (all its threads: librdkafka, chDB; the broker's JVM is not counted) — the CPU
ratio is the steadier one on a shared machine, wall time is what the issue asks. Then the lag
from produce to queryable as a multiple of the flush window, at a 1 s window and at the default
60 s one: one record per partition at a time, so each sample is its own batch and the samples of
one round run in parallel (two 60 s samples cost one window). Only ratios mean anything across
machines.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from confluent_kafka import Consumer, TopicPartition

from bench.harness import bench_broker
from services.common.clickhouse import connect
from services.common.kafka import ensure_topics, make_producer, record_key
from services.common.runtime import StopFlag
from services.common.serde import Serde
from services.common.topics import ENRICHED, VALID_TAGS, topic_name
from services.loader import ddl
from services.loader.batcher import Batch
from services.loader.enriched import ENRICHED_ROUTE
from services.loader.main import Loader, loader_consumer
from services.loader.rows import ROUTES, SOURCE_COLUMNS
from services.loader.settings import LoaderSettings
from services.loader.sink import ClickHouseSink

TAGS = next(r for r in ROUTES if r.table == "tags")


def records(n: int) -> list[dict]:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    return [
        {
            "message_id": f"b-{i}",
            "event_time": start + timedelta(seconds=i),
            "received_time": None,
            "source": "api",
            "app_id": ("ios", "android", "web")[i % 3],
            "backfill": False,
            "identity": {"install_id": f"dev-{i % 5000}", "anonymous_id": None, "external_user_id": None,
                         "email": None, "phone": None},
            "context": {"platform": "ios"},
            "name": f"tag_{i % 40}",
            "value": f"v{i % 300}",
        }
        for i in range(n)
    ]  # fmt: skip


def enveloped(i: int, record: dict, original: bytes) -> dict:
    """A tag hit as the enricher writes it onto `enriched`."""
    return {
        "message_id": record["message_id"],
        "person_id": f"p-{i % 5000}",
        "device_id": f"install_id:{record['identity']['install_id']}",
        "event_time": record["event_time"],
        "kind": "tag",
        "record_type": "tag_hit",
        "original": original,
        "details": {},
    }


class TimedLoader(Loader):
    """The real loader, timed (wall and this process's CPU) from its first consumed record to the
    commit of its last; it stops once every record is loaded."""

    def __init__(self, *args, target: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.target = target
        self.consumed = 0
        self.loaded = 0
        self.started: tuple[float, float] | None = None
        self.finished: tuple[float, float] = (0.0, 0.0)

    def _buffer(self, topic: str, partition: int, offsets: list[int], *columns: list) -> None:
        if self.started is None:
            self.started = (time.perf_counter(), time.process_time())
        super()._buffer(topic, partition, offsets, *columns)
        self.consumed += len(offsets)
        if self.consumed == self.target:
            # Everything is read: flush the partial batches now instead of after the time window
            # (what SIGTERM does), so the rate measures work, not the wait for the window.
            self.batcher.flush_seconds = 0.0

    def _commit(self, batches: list[Batch]) -> None:
        super()._commit(batches)
        self.loaded += sum(map(len, batches))
        if self.loaded >= self.target:
            self.finished = (time.perf_counter(), time.process_time())
            self._stop.set()

    def seconds(self) -> tuple[float, float]:
        """(wall, CPU) seconds of the run."""
        assert self.started is not None
        return self.finished[0] - self.started[0], self.finished[1] - self.started[1]


class AssignedLoader(Loader):
    """The real loader, telling when it owns partitions (the consumer is not for other threads)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.assigned = threading.Event()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        super()._on_assign(consumer, partitions)
        self.assigned.set()


def measure_lag(settings: LoaderSettings, client, serde: Serde, window: float, samples: int) -> list[float]:
    """Lags from produce to queryable, in windows, with a running loader flushing every ``window`` s.

    One record per partition at a time (each its own batch, so samples of a round do not share a
    flush); the clock starts once the loader owns its partitions (group join excluded). At a short
    window a first round, not counted, absorbs the start of fetching (a second or two); at the
    default window that is a few percent of one sample and a warm-up round would cost a window."""
    settings = settings.model_copy(
        update={
            "topic_prefix": f"lag{uuid.uuid4().hex[:6]}-",
            "loader_flush_seconds": window,
            "loader_group_id": f"lag-{uuid.uuid4().hex[:6]}",
            "loader_source": "valid",  # lag is timed on tags.valid whatever the throughput source
        }
    )
    ensure_topics(settings)  # every subscribed topic: a missing one stalls fetches
    sink, stop = ClickHouseSink(client), StopFlag()
    consumer, producer = loader_consumer(settings), make_producer(settings)
    loader = AssignedLoader(settings, sink, consumer, producer)
    thread = threading.Thread(target=loader.run, args=(stop,), daemon=True)
    thread.start()
    name, lags = topic_name(VALID_TAGS, settings), []
    assert loader.assigned.wait(60), "the lag loader got no partitions"
    warm = VALID_TAGS.partitions if window < 10 else 0
    data = records(warm + samples)
    for round_start in range(0, warm + samples, VALID_TAGS.partitions):
        sent: dict[str, float] = {}
        for partition in range(min(VALID_TAGS.partitions, warm + samples - round_start)):
            record = data[round_start + partition]
            record["message_id"] = f"lag-{window:g}-{round_start + partition}"
            producer.produce(name, value=serde.encode("tag_hit", record), partition=partition)
            producer.flush(10)
            sent[record["message_id"]] = time.perf_counter()
        while sent:
            with sink.lock:
                seen = client.query(
                    "SELECT message_id FROM tags WHERE message_id IN {ids:Array(String)}",
                    parameters={"ids": list(sent)},
                ).result_rows
            now = time.perf_counter()
            for (message_id,) in seen:
                lag = (now - sent.pop(message_id)) / window
                if round_start >= warm:
                    lags.append(lag)
            time.sleep(0.02)
    stop.set()
    thread.join(30)
    consumer.close()
    return sorted(lags)


def consume_only(settings: LoaderSettings, name: str, n: int) -> float:
    """Rows/s of a bare confluent consumer reading the n records (the Kafka side alone)."""
    consumer = loader_consumer(settings, f"bench-consume-{uuid.uuid4().hex[:6]}")  # same fetch settings
    consumer.subscribe([name])
    got, started = 0, None
    while got < n:
        messages = consumer.consume(5000, timeout=0.5)
        if messages and started is None:
            started = time.perf_counter()
        got += sum(1 for m in messages if not m.error())
    assert started is not None
    rate = n / (time.perf_counter() - started)
    consumer.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000, help="loader flush rows (and direct batch size)")
    parser.add_argument(
        "--lag-samples", type=int, default=10, help="records timed produce -> queryable, 1 s window"
    )
    parser.add_argument(
        "--default-lag-samples", type=int, default=2, help="the same at the default window (60 s); 0 skips it"
    )
    parser.add_argument("--profile", action="store_true", help="print where the loader spends its time")
    parser.add_argument(
        "--source",
        choices=("valid", "enriched"),
        default="valid",
        help="valid: tag hits on tags.valid; enriched: the same hits inside enricher envelopes on enriched",
    )
    parser.add_argument("--json", type=Path, help="also write the result here (bench/run.py)")
    args = parser.parse_args()
    with bench_broker() as (base, workdir):
        settings = LoaderSettings(
            kafka_bootstrap=base.bootstrap_servers,
            data_dir=workdir / "loader",
            topic_prefix=f"bench{uuid.uuid4().hex[:6]}-",
            loader_flush_rows=args.batch,
            loader_flush_seconds=2.0,
            loader_source=args.source,
            loader_group_id=f"bench-{uuid.uuid4().hex[:6]}",
        )
        result = run(args, settings)
    print(f"rows: {args.rows}, batch: {args.batch}, source: {args.source}")
    for what, rate in result["rates"].items():
        print(f"{what + ':':28s}{rate:>10,} rows/s")
    for what, ratio in result["ratios"].items():
        print(f"{what + ':':28s}{ratio:>10.2f}")
    for window, lag in result["lag_over_window"].items():
        print(
            f"produce -> queryable at a {window} window: median {lag['median']:.2f}x, "
            f"max {lag['max']:.2f}x the window ({lag['n']} records)"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def run(args: argparse.Namespace, settings: LoaderSettings) -> dict:
    ensure_topics(settings)  # every topic the loader subscribes to (missing ones stall fetches)
    data = records(args.rows)
    serde, producer = Serde(), make_producer(settings, **{"linger.ms": 50})
    name = topic_name(VALID_TAGS if args.source == "valid" else ENRICHED, settings)
    values = [serde.encode("tag_hit", record, check=False) for record in data]
    keys = [record_key(record) for record in data]
    if args.source == "enriched":
        pairs = enumerate(zip(data, values, strict=True))
        data = [enveloped(i, record, value) for i, (record, value) in pairs]
        values = [serde.encode("enriched_event", env, check=False) for env in data]
        keys = [env["person_id"].encode() for env in data]
    for key, value in zip(keys, values, strict=True):
        while True:
            try:
                producer.produce(name, value=value, key=key)
                break
            except BufferError:  # the local queue is full: let deliveries drain it
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0
    consumed = consume_only(settings, name, args.rows)

    client = connect(settings.clickhouse_dsn)
    ddl.apply(client)
    client.command("CREATE TABLE IF NOT EXISTS tags_direct AS tags")
    converted = (
        [TAGS.rows(r) for r in data]
        if args.source == "valid"
        else [ENRICHED_ROUTE.outputs(env, serde.decode)["tags"] for env in data]
    )
    rows = [(*row, name, 0, i) for i, rs in enumerate(converted) for row in rs]
    columns = [*TAGS.columns, *SOURCE_COLUMNS]
    # The bench's own records and rows (millions of objects) are no loader's heap: out of the
    # garbage collector's way, for the direct insert and the loader alike.
    gc.collect()
    gc.freeze()

    def insert_direct() -> tuple[float, float]:
        client.command("TRUNCATE TABLE tags_direct")
        started = time.perf_counter(), time.process_time()
        for i in range(0, len(rows), args.batch):
            client.insert("tags_direct", rows[i : i + args.batch], column_names=columns)
        return time.perf_counter() - started[0], time.process_time() - started[1]

    direct = insert_direct()

    consumer = loader_consumer(settings)
    loader = TimedLoader(settings, ClickHouseSink(client), consumer, producer, target=args.rows)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    loader.run(StopFlag())
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    consumer.close()
    assert client.query("SELECT count() FROM tags").result_rows[0][0] == args.rows
    wall, cpu = loader.seconds()
    again = insert_direct()  # before and after: the best of two, on a shared machine
    direct = min(direct[0], again[0]), min(direct[1], again[1])
    lags = {"1 s": measure_lag(settings, client, serde, 1.0, args.lag_samples)}
    if args.default_lag_samples:
        default = LoaderSettings.model_fields["loader_flush_seconds"].default
        lags[f"{default:g} s (default)"] = measure_lag(
            settings, client, serde, default, args.default_lag_samples
        )
    client.close()
    n = args.rows
    return {
        "stage": "loader",
        "source": args.source,
        "rows": n,
        "batch": args.batch,
        "rates": {
            "consume only": round(consumed),
            "direct insert": round(n / direct[0]),
            "loader": round(n / wall),
        },
        "ratios": {
            "loader/direct insert": round(direct[0] / wall, 3),
            "loader/direct insert, CPU": round(direct[1] / cpu, 3),
            "consume only/direct insert": round(consumed * direct[0] / n, 3),
        },
        "lag_over_window": {
            window: {"median": round(lag[len(lag) // 2], 2), "max": round(lag[-1], 2), "n": len(lag)}
            for window, lag in lags.items()
            if lag
        },
    }


if __name__ == "__main__":
    main()
