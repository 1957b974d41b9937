"""Enriched records/s through `tagstream run segmenter` (a subprocess) on a real broker.

The segmenter is warmed up (partitions assigned, one record processed), then ``--records``
enriched envelopes (events, tags, attribute updates over ``--persons`` persons) are produced and
the clock runs until its ``segmenter_records_total`` metric has counted them all. Definitions:
``config/segments.example.yaml`` (19 segments). The machine is shared: read it as an order of size.

    .venv/bin/python bench/segmenter_bench.py [--records 20000] [--persons 500]

Uses ``TAGSTREAM_KAFKA_BOOTSTRAP`` if set, else starts a local broker in a temp dir.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from services.common.broker import LocalBroker
from services.common.kafka import ensure_topics, make_producer
from services.common.serde import Serde
from services.common.settings import Settings
from services.common.topics import ENRICHED, topic_name
from tests import segmenter_records as sr
from tests.conftest import free_port, settings_env

REPO = Path(__file__).resolve().parents[1]


def processed(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(v) for v in re.findall(r"^segmenter_records_total\{[^}]*\} (\S+)$", text, re.M))


def wait(condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("timed out")
        time.sleep(0.05)


def envelopes(n: int, persons: int, t: int) -> list[dict]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        person = f"p{rng.randrange(persons)}"
        roll = rng.random()
        if roll < 0.6:
            name = rng.choice(["Order Completed", "Product Viewed", "visit", "Signed Up"])
            out.append(sr.event(person, t + i, name, {"revenue": rng.randrange(200)}, mid=f"m{i}"))
        elif roll < 0.85:
            out.append(sr.tag(person, t + i, rng.choice(["vip", "browsed", "newsletter"]), "x", mid=f"m{i}"))
        else:
            usage = ("number", str(rng.randrange(1000)))
            out.append(
                sr.update(person, t + i, {"monthly_usage_gb": usage, "plan": ("string", "pro")}, mid=f"m{i}")
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--persons", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = None
        bootstrap = os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP")
        if not bootstrap:
            local = Settings(
                data_dir=Path(tmp) / "kafka", kafka_port=free_port(), kafka_controller_port=free_port()
            )
            broker = LocalBroker(local)
            broker.start()
            bootstrap = local.bootstrap_servers
        s = Settings(
            kafka_bootstrap=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:8]}-", data_dir=Path(tmp) / "d"
        )
        ensure_topics(s)
        port = free_port()
        definitions = str(REPO / "config/segments.example.yaml")
        env = {**settings_env(s), "TAGSTREAM_HEALTH_PORT": str(port),
               "TAGSTREAM_SEGMENTER_DEFINITIONS_FILE": definitions}  # fmt: skip
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "run", "segmenter"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            serde, producer, name = Serde(), make_producer(s), topic_name(ENRICHED, s)
            t = int(time.time() * 1000)
            records = [
                serde.encode("enriched_event", e) for e in envelopes(args.records + 1, args.persons, t)
            ]
            producer.produce(name, key=b"p0", value=records[0])
            producer.flush(30)

            def warm() -> bool:
                try:
                    return processed(port) >= 1
                except OSError:
                    return False

            wait(warm, 120)
            started = time.perf_counter()
            for i, value in enumerate(records[1:]):
                producer.produce(name, key=f"p{i % args.persons}".encode(), value=value)
                producer.poll(0)
            producer.flush(60)
            wait(lambda: processed(port) >= len(records), 600)
            elapsed = time.perf_counter() - started
            print(f"{args.records} records, {args.persons} persons, 19 segments: "
                  f"{elapsed:.1f} s, {args.records / elapsed:.0f} records/s")  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(60)
            if broker is not None:
                broker.stop()


if __name__ == "__main__":
    main()
