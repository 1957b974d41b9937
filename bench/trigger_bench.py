"""Trigger latency: an enriched event's produce to its message on outbound.email, at a steady rate.

Starts the trigger (and, unless TAGSTREAM_KAFKA_BOOTSTRAP is set, a local broker in a temp dir),
gives ``--persons`` people a profile with an email, then produces one ``signup`` per event at
``--rate`` events/s for ``--seconds`` and prints p50/p99/max of (outbound message's timestamp -
the event's produce time). The trigger alone, not the whole pipeline; the machine is shared.

    .venv/bin/python bench/trigger_bench.py [--rate 200] [--seconds 20] [--persons 500]
        [--env TAGSTREAM_X=Y ...] [--compare NAME:KEY=VALUE,...] [--repeat N]

``--compare`` runs the trigger with other settings too, on the same broker, alternating with
the run under ``--env`` (``--repeat`` rounds), and prints each run and the ratios now/NAME: on a
shared machine only ratios of runs close in time mean something.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from services.common.broker import LocalBroker
from services.common.kafka import ensure_topics, make_producer, make_reader
from services.common.serde import Serde
from services.common.settings import Settings
from services.common.topics import ENRICHED, OUTBOUND_TOPICS, PROFILES, topic_name
from tests.conftest import free_port, settings_env
from tests.enricher_records import T0, event

REPO = Path(__file__).resolve().parents[1]
CAMPAIGNS = """
campaigns:
  - id: welcome
    trigger: {kind: event, name: signup}
    channels: {order: [email]}
    templates:
      email: {subject: "Welcome, {{ person.first_name }}", text: "Start at https://example.com/start"}
"""


def run(
    base: Settings, rate: float, seconds: float, persons: int, workdir: Path, extra: dict[str, str]
) -> list[float]:
    s = base.model_copy(update={"topic_prefix": f"b{uuid.uuid4().hex[:8]}-", "data_dir": workdir / "data"})
    ensure_topics(s)
    serde, producer = Serde(), make_producer(s, partitioner="murmur2_random", **{"linger.ms": 0})
    (workdir / "campaigns.yaml").write_text(CAMPAIGNS)
    env = {
        **settings_env(s),
        "TAGSTREAM_HEALTH_PORT": "0",
        "TAGSTREAM_TRIGGER_CAMPAIGNS_FILE": str(workdir / "campaigns.yaml"),
        "PYTHONPATH": str(REPO),
        **extra,
    }
    email = topic_name(next(t for t in OUTBOUND_TOPICS if t.name == "outbound.email"), s)
    reader = make_reader(s)
    reader.subscribe([email])
    with open(workdir / "trigger.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", "trigger"],
            env=env,
            stdout=log,
            stderr=log,
            cwd=REPO,
        )
    try:
        for i in range(persons):
            profile = {
                "person_id": f"p{i}",
                "updated_time": T0,
                "email": f"p{i}@example.com",
                "subscriptions": ["email"],
                "attributes": [
                    {"name": "first_name", "type": "string", "value": "A", "scope": "person", "time": 0}
                ],
            }
            producer.produce(
                topic_name(PROFILES, s), key=f"p{i}".encode(), value=serde.encode("profile", profile)
            )
        producer.flush(60)
        sent: dict[str, float] = {}
        latencies: list[float] = []

        def send(mid: str, person: str) -> None:
            original = serde.encode("event", event(mid, T0, "custom", "signup", external_user_id=person))
            env_record = {
                "message_id": mid,
                "person_id": person,
                "device_id": None,
                "event_time": T0,
                "kind": "event",
                "record_type": "event",
                "original": original,
                "details": {},
            }
            value = serde.encode("enriched_event", env_record)
            sent[mid] = time.time()
            producer.produce(topic_name(ENRICHED, s), key=person.encode(), value=value)
            producer.poll(0)

        def drain(timeout: float) -> None:
            for m in reader.consume(1000, timeout=timeout):
                if not m.error():
                    record = serde.decode(m.value())[1]
                    mid = record["trigger_event_id"]
                    if mid in sent and not mid.startswith("warm"):
                        latencies.append(m.timestamp()[1] / 1000 - sent[mid])

        deadline, attempt = time.monotonic() + 180, 0
        while True:  # warm-up: the service is ready (and has the profiles) once one comes out
            send(f"warm-{attempt}", "p0")
            producer.flush(10)
            if [m for m in reader.consume(10, timeout=2.0) if not m.error()]:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the trigger did not answer the warm-up events")
            attempt += 1
        time.sleep(3)  # the remaining profiles applied
        drain(0.5)
        n, started = int(rate * seconds), time.monotonic()
        for i in range(n):
            while time.monotonic() < started + i / rate:
                drain(0)
                time.sleep(0.0005)
            send(f"e{i}", f"p{i % persons}")
        producer.flush(30)
        end = time.monotonic() + 60
        while len(latencies) < n and time.monotonic() < end:
            drain(0.2)
        if len(latencies) < n:
            print(f"only {len(latencies)} of {n} messages arrived")
        return latencies
    finally:
        proc.terminate()
        proc.wait(60)
        reader.close()


def quantiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"p50": p(0.5), "p99": p(0.99), "max": ordered[-1] * 1000, "mean": statistics.mean(ordered) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--persons", type=int, default=500)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the trigger")
    parser.add_argument(
        "--compare", action="append", default=[], help="NAME:KEY=VALUE,...: also run with these settings"
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every variant, alternating")
    args = parser.parse_args()
    variants: dict[str, dict[str, str]] = {}
    for spec in args.compare:
        name, _, pairs = spec.partition(":")
        variants[name] = dict(kv.split("=", 1) for kv in pairs.split(",") if kv)
    variants["now"] = dict(kv.split("=", 1) for kv in args.env)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        workdir, broker = Path(tmp), None
        if os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP"):
            base = Settings()
        else:
            base = Settings(
                data_dir=workdir / "broker", kafka_port=free_port(), kafka_controller_port=free_port()
            )
            broker = LocalBroker(base)
            broker.start()
            base = base.model_copy(update={"kafka_bootstrap": base.bootstrap_servers})
        try:
            for round_ in range(args.repeat):
                for name, extra in variants.items():
                    sub = workdir / f"{name}-{round_}"
                    sub.mkdir()
                    latencies = run(base, args.rate, args.seconds, args.persons, sub, extra)
                    if not latencies:
                        raise SystemExit(f"{name}: no messages")
                    q = quantiles(latencies)
                    results[name].append(q)
                    print(
                        f"{name} round {round_}: {len(latencies)} messages at {args.rate:g} events/s for "
                        f"{args.seconds:g} s; latency ms: p50 {q['p50']:.1f}  p99 {q['p99']:.1f}  "
                        f"max {q['max']:.1f}  mean {q['mean']:.1f}",
                        flush=True,
                    )
        finally:
            if broker:
                broker.stop()
    for name in variants:
        if name == "now":
            continue
        for q in ("p50", "p99", "mean"):
            ratios = [
                now[q] / max(0.001, then[q]) for now, then in zip(results["now"], results[name], strict=True)
            ]
            print(f"{q} now/{name} per round: {', '.join(f'{r:.2f}' for r in ratios)}")


if __name__ == "__main__":
    main()
