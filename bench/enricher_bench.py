"""Enriched events/s against a bare faust passthrough and a bare confluent-kafka passthrough.

All three run on the same broker in the same run, each on fresh topics (its own prefix), each as a
subprocess warmed up first; the clock runs from the first produced record to the last output seen.
Only ratios are meaningful (the machine is shared).

    .venv/bin/python bench/enricher_bench.py [--records 20000] [--devices 200]

Uses ``TAGSTREAM_KAFKA_BOOTSTRAP`` if set, else starts a local broker in a temp dir.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import KafkaException, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.harness import bench_broker, produce, wait_for
from services.common.kafka import ensure_topics, make_consumer, make_producer, make_reader, record_key
from services.common.serde import Serde
from services.common.settings import Settings
from services.common.topics import ENRICHED, VALID_EVENTS, TopicSpec, topic_name
from tests.conftest import settings_env
from tests.enricher_records import T0, event

REPO = Path(__file__).resolve().parents[1]


def faust_passthrough() -> None:
    """A bare faust agent: events.valid -> enriched, bytes untouched (run as a subprocess)."""
    import faust

    s = Settings()
    (s.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{s.topic_prefix}bench-faust",
        broker=f"kafka://{s.bootstrap_servers}",
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        datadir=str(s.data_dir / "faust"),
    )
    source = app.topic(topic_name(VALID_EVENTS, s))
    sink = app.topic(topic_name(ENRICHED, s))

    @app.agent(source)
    async def passthrough(stream):  # type: ignore[no-untyped-def]
        async for ev in stream.events():
            await sink.send(key=ev.key, value=ev.value)

    faust.Worker(app, loglevel="warn", quiet=True, redirect_stdouts=False).execute_from_commandline()


def confluent_passthrough() -> None:
    """A bare confluent-kafka loop: consume, produce, commit after delivery (run as a subprocess)."""
    s = Settings()
    consumer = make_consumer(s, f"{s.topic_prefix}bench-ck")
    producer = make_producer(s)
    consumer.subscribe([topic_name(VALID_EVENTS, s)])
    sink = topic_name(ENRICHED, s)
    while True:
        batch = consumer.consume(500, timeout=0.5)
        for message in batch:
            if not message.error():
                producer.produce(sink, key=message.key(), value=message.value())
        producer.flush()
        for message in batch:
            consumer.store_offsets(message)
        if batch:
            consumer.commit(asynchronous=True)


def count(settings: Settings, spec: TopicSpec = ENRICHED) -> int:
    """Records on ``spec`` so far (high watermarks: offsets, whatever compaction removed)."""
    reader = make_reader(settings)
    name = topic_name(spec, settings)
    total = 0
    try:
        for p in reader.list_topics(name, timeout=10).topics[name].partitions:
            _, high = reader.get_watermark_offsets(TopicPartition(name, p), timeout=10)
            total += high
    except KafkaException:  # a leader moving or a topic just created: ask again next time
        return 0
    finally:
        reader.close()
    return total


def run_variant(name: str, base: Settings, n: int, devices: int, workdir: Path) -> float:
    s = base.model_copy(update={"topic_prefix": f"b{uuid.uuid4().hex[:8]}-", "data_dir": workdir / name})
    ensure_topics(s)
    serde = Serde()
    env = {**settings_env(s), "TAGSTREAM_ENRICHER_HEALTH_PORT": "0", "PYTHONPATH": str(REPO)}
    argv = {
        "enricher": [sys.executable, "-m", "services.cli", "run", "enricher"],
        "faust": [sys.executable, __file__, "--child", "faust"],
        "confluent": [sys.executable, __file__, "--child", "confluent"],
    }[name]
    # The enricher adds one session_start per device; the passthroughs copy records one to one.
    extra = 1 if name == "enricher" else 0
    warm = [event(f"w{i}", T0 + i, install_id="warm") for i in range(50)]
    records = [event(f"r{i}", T0 + i, install_id=f"d{i % devices}") for i in range(n)]
    with open(workdir / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, cwd=REPO)
    try:
        produce(s, VALID_EVENTS, [(record_key(r), serde.encode("event", r)) for r in warm])
        wait_for(lambda: count(s) >= len(warm) + extra, 180, f"{name} warm-up")
        encoded = [serde.encode("event", r) for r in records]
        keys = [record_key(r) for r in records]
        started = time.perf_counter()
        produce(s, VALID_EVENTS, list(zip(keys, encoded, strict=True)))
        expected = len(warm) + extra + n + (devices if name == "enricher" else 0)
        wait_for(lambda: count(s) >= expected, 600, f"{name} run")
        return n / (time.perf_counter() - started)
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--child", choices=["faust", "confluent"])
    parser.add_argument("--json", type=Path, help="also write the result here (bench/run.py)")
    args = parser.parse_args()
    if args.child == "faust":
        return faust_passthrough()
    if args.child == "confluent":
        return confluent_passthrough()
    with bench_broker() as (base, workdir):
        rates = {
            name: run_variant(name, base, args.records, args.devices, workdir)
            for name in ("confluent", "faust", "enricher")
        }
    print(f"{args.records} events, {args.devices} devices, same broker, same run")
    print(f"enricher / bare faust passthrough:     {rates['enricher'] / rates['faust']:.2f}")
    print(f"enricher / bare confluent passthrough: {rates['enricher'] / rates['confluent']:.2f}")
    print(f"bare faust / bare confluent:           {rates['faust'] / rates['confluent']:.2f}")
    if args.json:
        result = {
            "stage": "enricher",
            "records": args.records,
            "rates": {name: round(rate) for name, rate in rates.items()},
            "ratios": {
                "enricher/passthrough": round(rates["enricher"] / rates["confluent"], 3),
                "enricher/faust passthrough": round(rates["enricher"] / rates["faust"], 3),
            },
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
