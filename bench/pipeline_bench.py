"""Whole pipeline: latency from an event's produce on the raw topic to its message on an outbound
topic, with ingest, enricher, segmenter, trigger and loader all running on one broker.

    .venv/bin/python bench/pipeline_bench.py [--rate 100] [--seconds 30] [--persons 200] [--json PATH]

Events named ``bench_ping`` are produced at a steady ``--rate`` for ``--seconds``; a transactional
webhook campaign turns each into one message on ``outbound.webhook`` (no caps, no quiet hours, so
every event gives exactly one message). Latency = the message's Kafka timestamp (set by the
trigger's producer) minus the event's (set by our producer), same machine clock. Reported:
p50/p95/p99 and the rate the pipeline kept up with (messages out / seconds of producing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from confluent_kafka import Consumer, TopicPartition

from bench.harness import REPO, bench_broker, fresh, wait_for, write_result
from services.common.kafka import client_config, make_producer, record_key
from services.common.serde import Serde
from services.common.settings import Settings
from services.common.topics import EVENTS, OUTBOUND_TOPICS, topic_name
from tests.conftest import settings_env

SERVICES = ("ingest", "enricher", "segmenter", "trigger", "loader")
WEBHOOK = next(t for t in OUTBOUND_TOPICS if t.name == "outbound.webhook")
CAMPAIGNS = """\
campaigns:
  - id: bench-ping
    transactional: true
    trigger: {kind: event, name: bench_ping}
    channels: {order: [webhook]}
    templates:
      webhook: {url: "http://127.0.0.1:9/bench", body: "{{ event.properties.n }}"}
"""


def ping(n: int, person: int) -> dict[str, Any]:
    return {
        "message_id": f"ping-{n}",
        "event_time": int(time.time() * 1000),
        "received_time": None,
        "source": "bench",
        "app_id": "bench",
        "backfill": False,
        "identity": {
            "install_id": None,
            "anonymous_id": None,
            "external_user_id": f"user-{person}",
            "email": None,
            "phone": None,
        },
        "context": {},
        "name": "bench_ping",
        "kind": "custom",
        "properties": json.dumps({"n": n}),
    }


class Outbound:
    """Reads outbound.webhook; remembers each message's trigger event id and Kafka timestamp."""

    def __init__(self, settings: Settings) -> None:
        config = {**client_config(settings), "group.id": f"bench-{uuid.uuid4().hex[:8]}"}
        self.consumer = Consumer({**config, "enable.auto.commit": False, "isolation.level": "read_committed"})
        name = topic_name(WEBHOOK, settings)
        self.consumer.assign([TopicPartition(name, p, 0) for p in range(WEBHOOK.partitions)])
        self.serde = Serde()
        self.seen: dict[str, int] = {}

    def poll(self) -> None:
        for m in self.consumer.consume(1000, timeout=0.1):
            if not m.error():
                record = self.serde.decode(m.value())[1]
                self.seen.setdefault(record["trigger_event_id"], m.timestamp()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="events/s produced")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--persons", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    serde = Serde()
    with bench_broker() as (base, workdir):
        s = fresh(base, workdir, "pipeline")
        campaigns = workdir / "campaigns.yaml"
        campaigns.write_text(CAMPAIGNS)
        env = {
            **settings_env(s),
            "PYTHONPATH": str(REPO),
            "TAGSTREAM_HEALTH_PORT": "0",
            "TAGSTREAM_TRIGGER_CAMPAIGNS_FILE": str(campaigns),
            "TAGSTREAM_LOADER_FLUSH_SECONDS": "5",
            "TAGSTREAM_LOG_LEVEL": "WARNING",
        }
        procs = []
        for name in SERVICES:
            log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            argv = [sys.executable, "-m", "services.cli", "run", name]
            procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=log, cwd=REPO))
        out = Outbound(s)
        producer = make_producer(s, **{"linger.ms": 0})
        events = topic_name(EVENTS, s)
        sent: dict[str, int] = {}

        def send(n: int) -> None:
            record = ping(n, n % args.persons)
            producer.produce(events, key=record_key(record), value=serde.encode("event", record))
            producer.poll(0)

        def alive() -> None:
            for name, proc in zip(SERVICES, procs, strict=True):
                if proc.poll() is not None:
                    raise SystemExit(f"{name} exited with {proc.returncode}; see {workdir / name}.log")

        try:
            # Warm-up: one event per person (creates the persons) and the whole chain has answered.
            for n in range(args.persons):
                send(-1 - n)
            producer.flush(30)

            def warmed() -> bool:
                alive()
                out.poll()
                return len(out.seen) >= args.persons

            wait_for(warmed, 300, "pipeline warm-up")
            total = int(args.rate * args.seconds)
            started = time.monotonic()
            for n in range(total):
                while time.monotonic() < started + n / args.rate:
                    out.poll()
                send(n)
            producer.flush(30)
            produced = time.monotonic() - started

            def drained() -> bool:
                alive()
                out.poll()
                return sum(1 for n in range(total) if f"ping-{n}" in out.seen) >= total

            wait_for(drained, 300, "pipeline drain")
            finished = time.monotonic() - started
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(60)
        # Produce timestamps come from the event records' own Kafka timestamps: read them back.
        reader = Consumer({**client_config(s), "group.id": f"bench-{uuid.uuid4().hex[:8]}"})
        reader.assign([TopicPartition(events, p, 0) for p in range(EVENTS.partitions)])
        while len(sent) < total + args.persons:
            for m in reader.consume(1000, timeout=1):
                if not m.error():
                    sent[serde.decode(m.value())[1]["message_id"]] = m.timestamp()[1]
        reader.close()
        latencies = sorted(out.seen[f"ping-{n}"] - sent[f"ping-{n}"] for n in range(total))
    q = statistics.quantiles(latencies, n=100)
    write_result(
        args.json,
        {
            "stage": "pipeline",
            "events": total,
            "rates": {
                "produced events/s": round(total / produced),
                "delivered events/s": round(total / finished),
            },
            "ratios": {"delivered/produced rate": round(produced / finished, 3)},
            "latency_ms": {
                "p50": round(q[49]),
                "p95": round(q[94]),
                "p99": round(q[98]),
                "max": latencies[-1],
            },
        },
    )


if __name__ == "__main__":
    main()
