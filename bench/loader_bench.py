"""Loader throughput: rows/s loaded end to end vs inserting the same rows straight from Python.

    .venv/bin/python bench/loader_bench.py [--rows 200000]

Starts a local broker in a temp dir (or uses ``TAGSTREAM_KAFKA_BOOTSTRAP``), produces tag hits
as Avro to ``tags.valid``, then in one process and one chDB data dir:

1. direct: the same rows, already converted, inserted with ``client.insert`` into a copy of the
   ``tags`` table in batches of the loader's size (the best Python can do), once before and once
   after the loader run, keeping the faster (other processes share the CPU);
2. loader: the real :class:`Loader` consuming, decoding, converting, recording its intent,
   inserting with dedup tokens and committing, timed from its first consumed record to its last
   commit (group join excluded).

Prints both rates and their ratio (target ≥ 0.7), then the lag from produce to queryable with
a 1 s window, as a multiple of the window. Only ratios are meaningful across machines.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import shutil
import socket
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.common.broker import LocalBroker
from services.common.clickhouse import connect
from services.common.kafka import ensure_topics, make_consumer, make_producer, record_key
from services.common.runtime import StopFlag
from services.common.serde import Serde
from services.common.topics import ENRICHED, VALID_TAGS, topic_name
from services.loader import ddl
from services.loader.batcher import Batch
from services.loader.enriched import ENRICHED_ROUTE
from services.loader.main import Loader
from services.loader.rows import ROUTES, SOURCE_COLUMNS
from services.loader.settings import LoaderSettings
from services.loader.sink import ClickHouseSink


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    def __init__(self, *args, target: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.target = target
        self.consumed = 0
        self.loaded = 0
        self.first: float | None = None
        self.done = threading.Event()

    def _buffer(self, topic: str, partition: int, offsets: list[int], *columns: list) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        super()._buffer(topic, partition, offsets, *columns)
        self.consumed += len(offsets)
        if self.consumed == self.target:
            # Everything is read: flush the partial batches now instead of after the time window
            # (what SIGTERM does), so the rate measures work, not the wait for the window.
            self.batcher.flush_seconds = 0.0

    def process(self, batch: Batch, stop: StopFlag) -> None:
        super().process(batch, stop)
        self.loaded += len(batch)
        if self.loaded >= self.target:
            self.last = time.perf_counter()
            self.done.set()
            stop.set()


LAG_WINDOW_SECONDS = 1.0


def measure_lag(settings: LoaderSettings, client, serde: Serde, samples: int) -> list[float]:
    """Produce one record at a time to a running loader (1 s window); time until a query sees it."""
    settings = settings.model_copy(
        update={
            "topic_prefix": f"lag{uuid.uuid4().hex[:6]}-",
            "loader_flush_seconds": LAG_WINDOW_SECONDS,
            "loader_group_id": f"lag-{uuid.uuid4().hex[:6]}",
            "loader_source": "valid",  # lag is timed on tags.valid whatever the throughput source
        }
    )
    ensure_topics(settings, [VALID_TAGS])
    sink, stop = ClickHouseSink(client), StopFlag()
    consumer, producer = make_consumer(settings, settings.loader_group_id), make_producer(settings)
    loader = Loader(settings, sink, consumer, producer)
    thread = threading.Thread(target=loader.run, args=(stop,), daemon=True)
    thread.start()
    name, lags = topic_name(VALID_TAGS, settings), []
    for i, record in enumerate(records(samples + 1)):
        record["message_id"] = f"lag-{i}"
        producer.produce(name, value=serde.encode("tag_hit", record), key=record_key(record))
        producer.flush(10)
        sent = time.perf_counter()
        while True:
            with sink.lock:
                seen = client.query(f"SELECT count() FROM tags WHERE message_id = 'lag-{i}'").result_rows[0][
                    0
                ]
            if seen:
                break
            time.sleep(0.02)
        if i:  # the first one includes the consumer group join
            lags.append(time.perf_counter() - sent)
    stop.set()
    thread.join(30)
    consumer.close()
    return lags


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000, help="loader flush rows (and direct batch size)")
    parser.add_argument("--lag-samples", type=int, default=10, help="records timed produce -> queryable")
    parser.add_argument("--profile", action="store_true", help="print where the loader spends its time")
    parser.add_argument(
        "--source",
        choices=("valid", "enriched"),
        default="valid",
        help="valid: tag hits on tags.valid; enriched: the same hits inside enricher envelopes on enriched",
    )
    parser.add_argument("--json", type=Path, help="also write the result here (bench/run.py)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="loader-bench-"))
    base = LoaderSettings(data_dir=tmp, kafka_port=free_port(), kafka_controller_port=free_port())
    broker = None if base.kafka_bootstrap else LocalBroker(base)
    if broker:
        broker.start()
    try:
        settings = base.model_copy(
            update={
                "topic_prefix": f"bench{uuid.uuid4().hex[:6]}-",
                "loader_flush_rows": args.batch,
                "loader_flush_seconds": 2.0,
                "loader_source": args.source,
                "loader_group_id": f"bench-{uuid.uuid4().hex[:6]}",
            }
        )
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

        def insert_direct() -> float:
            client.command("TRUNCATE TABLE tags_direct")
            started = time.perf_counter()
            for i in range(0, len(rows), args.batch):
                client.insert("tags_direct", rows[i : i + args.batch], column_names=columns)
            return len(rows) / (time.perf_counter() - started)

        direct = insert_direct()

        consumer = make_consumer(settings, settings.loader_group_id)
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
        end_to_end = args.rows / (loader.last - loader.first)
        direct = max(direct, insert_direct())  # before and after: the best of two, on a shared machine
        lags = measure_lag(settings, client, serde, samples=args.lag_samples)
        client.close()
        print(f"rows: {args.rows}, batch: {args.batch}, source: {args.source}")
        print(f"direct insert from Python: {direct:,.0f} rows/s")
        print(f"loader end to end:         {end_to_end:,.0f} rows/s")
        print(f"ratio loader/direct:       {end_to_end / direct:.2f} (target >= 0.7)")
        lags.sort()
        window = LAG_WINDOW_SECONDS
        print(
            f"produce -> queryable lag at a {window:g} s window: "
            f"median {lags[len(lags) // 2] / window:.2f}x, max {lags[-1] / window:.2f}x the window "
            f"({len(lags)} records)"
        )
        if args.json:
            result = {
                "stage": "loader",
                "source": args.source,
                "rows": args.rows,
                "rates": {"direct insert": round(direct), "loader": round(end_to_end)},
                "ratios": {"loader/direct insert": round(end_to_end / direct, 3)},
                "lag_over_window": {
                    "median": round(lags[len(lags) // 2] / window, 2),
                    "max": round(lags[-1] / window, 2),
                },
            }
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if broker:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
