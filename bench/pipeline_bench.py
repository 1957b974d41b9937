"""Whole pipeline: latency from an event's produce on the raw topic to its message on an outbound
topic and to its row being queryable in ClickHouse, with ingest, enricher, segmenter, trigger and
loader all running on one broker; per-hop latency; the highest rate the pipeline holds.

    .venv/bin/python bench/pipeline_bench.py [--low-rate 20] [--rates 50,100,200,400]
        [--seconds 20] [--persons 200] [--env TAGSTREAM_X=Y ...] [--json PATH]

Events named ``bench_ping`` are produced at a steady rate; a transactional webhook campaign turns
each into one message on ``outbound.webhook`` (no caps, no quiet hours: one message per event).
Phases: a fixed low rate, then rates stepped up until the pipeline falls behind (fewer than 99% of
a step's events out within ``--grace`` seconds of its last produce); "held" is the last rate kept.
Reported per phase: p50/p95/p99 raw topic -> outbound message, produce -> queryable in ClickHouse
(the loader flushes every second; the bench polls the loader's query API every 0.25 s, so this is
an upper bound by that much), the cost of each hop, and each service's CPU seconds per 1000 events.
The hop topics stamp records on arrival at the broker (LogAppendTime, set by the bench), so a hop
is arrival on one topic to arrival on the next: it includes the consumer's fetch and the
producer's buffering. Ingest's records arrive when produced, before its transaction commits, so
``events.valid -> enricher.identity`` includes that commit. Hop shares are of the mean end-to-end
latency (means add up; percentiles do not).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import itertools

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from bench.harness import REPO, bench_broker, fresh, variants, wait_for, write_result
from services.common.kafka import client_config, make_admin, make_producer, record_key
from services.common.serde import Serde
from services.common.settings import Settings
from services.common.topics import (
    ENRICHED,
    ENRICHER_IDENTITY,
    ENRICHER_ROUTED,
    EVENTS,
    OUTBOUND_TOPICS,
    VALID_EVENTS,
    TopicSpec,
    topic_name,
)
from tests.conftest import settings_env

SERVICES = ("ingest", "enricher", "segmenter", "trigger", "loader")
WEBHOOK = next(t for t in OUTBOUND_TOPICS if t.name == "outbound.webhook")
# An event's path, topic by topic; the last hop is the campaign's message.
HOPS: tuple[TopicSpec, ...] = (EVENTS, VALID_EVENTS, ENRICHER_IDENTITY, ENRICHER_ROUTED, ENRICHED, WEBHOOK)
CAMPAIGNS = """\
campaigns:
  - id: bench-ping
    transactional: true
    trigger: {kind: event, name: bench_ping}
    channels: {order: [webhook]}
    templates:
      webhook: {url: "http://127.0.0.1:9/bench", body: "{{ event.properties.n }}"}
"""
QUERY_EVERY_S = 0.25


def stamp_on_arrival(settings: Settings) -> None:
    """Hop topics get broker time stamps (LogAppendTime): a hop then ends when the record reached
    the broker, not when a producer created it and perhaps held it in its buffer."""
    entry = ConfigEntry(
        "message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET
    )
    resources = [
        ConfigResource(ConfigResource.Type.TOPIC, topic_name(spec, settings), incremental_configs=[entry])
        for spec in HOPS
    ]
    admin = make_admin(settings)  # held until the futures resolve
    for future in admin.incremental_alter_configs(resources).values():
        future.result()


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


def event_id(spec: TopicSpec, record: dict[str, Any]) -> str | None:
    """The ``ping-N`` a record on ``spec`` stands for (None: another record, e.g. a session start)."""
    if spec is WEBHOOK:
        return record["trigger_event_id"]
    if spec in (ENRICHER_ROUTED, ENRICHED) and record["kind"] != "event":
        return None
    return record["message_id"]


class Tracer:
    """Reads every hop topic from the start (read uncommitted: only timestamps matter) and keeps
    the first Kafka timestamp of each event id per topic."""

    def __init__(self, settings: Settings) -> None:
        config = {**client_config(settings), "group.id": f"bench-{uuid.uuid4().hex[:8]}"}
        self.consumer = Consumer({**config, "enable.auto.commit": False})
        self.specs = {topic_name(spec, settings): spec for spec in HOPS}
        self.consumer.assign(
            [TopicPartition(name, p, 0) for name, spec in self.specs.items() for p in range(spec.partitions)]
        )
        self.serde = Serde()
        self.stamps: dict[str, dict[str, int]] = {spec.name: {} for spec in HOPS}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for m in self.consumer.consume(1000, timeout=0.1):
                if m.error():
                    continue
                spec = self.specs[m.topic()]
                eid = event_id(spec, self.serde.decode(m.value())[1])
                if eid is not None:
                    self.stamps[spec.name].setdefault(eid, m.timestamp()[1])

    def out(self, eid: str) -> int | None:
        return self.stamps[WEBHOOK.name].get(eid)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


class Queryable:
    """Polls the loader's query API for bench events; keeps when each was first seen (wall ms).
    Each poll reads only rows at or after the oldest event not yet seen, so the bench's own
    queries stay small (they run in the loader process, beside its inserts)."""

    def __init__(self, api_file: Path, sent: dict[str, int]) -> None:
        self.api_file = api_file
        self.sent = sent
        self.seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        url = None
        while not self._stop.wait(QUERY_EVERY_S):
            pending = [t for i, t in list(self.sent.items()) if i not in self.seen]
            if not pending:
                continue
            sql = (
                "SELECT message_id FROM events WHERE name = 'bench_ping' "
                f"AND event_time >= fromUnixTimestamp64Milli(toInt64({min(pending)}))"
            )
            try:
                url = url or json.loads(self.api_file.read_text())["url"]
                with urllib.request.urlopen(f"{url}/query", data=sql.encode(), timeout=30) as response:
                    rows = json.loads(response.read())["rows"]
            except (OSError, ValueError, KeyError):
                url = None  # the loader is still starting
                continue
            now_ms = int(time.time() * 1000)
            for (mid,) in rows:
                self.seen.setdefault(mid, now_ms)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantiles(values: list[int]) -> dict[str, int]:
    if len(values) < 2:
        return {"p50": values[0], "p95": values[0], "p99": values[0]} if values else {}
    q = statistics.quantiles(sorted(values), n=100)
    return {"p50": round(q[49]), "p95": round(q[94]), "p99": round(q[98]), "max": max(values)}


def phase_report(
    ids: list[str], sent: dict[str, int], tracer: Tracer, queryable: Queryable, seconds: float
) -> dict[str, Any]:
    """Latency quantiles end to end, to ClickHouse, and per hop, for the events of one phase."""
    stamps = tracer.stamps
    start = {i: stamps[EVENTS.name].get(i, sent[i]) for i in ids}
    total = [out - start[i] for i in ids if (out := tracer.out(i)) is not None]
    hops: dict[str, Any] = {}
    mean_total = statistics.fmean(total) if total else 0.0
    for a, b in itertools.pairwise(HOPS):
        diffs = [
            stamps[b.name][i] - stamps[a.name][i] for i in ids if i in stamps[a.name] and i in stamps[b.name]
        ]
        if diffs:
            share = statistics.fmean(diffs) / mean_total if mean_total else 0.0
            hops[f"{a.name} -> {b.name}"] = {
                **quantiles(diffs),
                "mean": round(statistics.fmean(diffs)),
                "share": round(share, 3),
            }
    ch = [queryable.seen[i] - sent[i] for i in ids if i in queryable.seen]
    return {
        "produced events/s": round(len(ids) / seconds, 1),
        "delivered": len(total),
        "latency_ms": quantiles(total),
        "queryable_ms": quantiles(ch),
        "queryable": len(ch),
        "hops_ms": hops,
    }


def run_pipeline(
    base: Settings, workdir: Path, args: argparse.Namespace, name: str, extra: dict[str, str]
) -> dict[str, Any]:
    """One whole pipeline on fresh topics: warm-up, the low-rate phase, then the stepped rates."""
    serde = Serde()
    extra = dict(extra)
    without = set(extra.pop("without", "").split("+"))  # e.g. segmenter+loader: what they cost beside
    services = [service for service in SERVICES if service not in without]
    s = fresh(base, workdir, name)
    stamp_on_arrival(s)
    campaigns = workdir / "campaigns.yaml"
    campaigns.write_text(CAMPAIGNS)
    env = {
        **settings_env(s),
        "PYTHONPATH": str(REPO),
        "TAGSTREAM_HEALTH_PORT": "0",
        "TAGSTREAM_LOADER_PORT": "0",
        "TAGSTREAM_TRIGGER_CAMPAIGNS_FILE": str(campaigns),
        "TAGSTREAM_LOADER_FLUSH_SECONDS": "1",
        "TAGSTREAM_LOG_LEVEL": "WARNING",
        **extra,
    }
    procs = []
    for service in services:
        log = open(workdir / f"{name}-{service}.log", "wb")  # noqa: SIM115 - closed with the process
        argv = [sys.executable, "-m", "services.cli", "run", service]
        procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=log, cwd=REPO))
    tracer = Tracer(s)
    sent: dict[str, int] = {}  # event id -> produce time (wall ms)
    queryable = Queryable(s.data_dir / "loader" / "api.json", sent)
    producer = make_producer(s, **{"linger.ms": 0})
    events = topic_name(EVENTS, s)

    def send(n: int) -> None:
        record = ping(n, n % args.persons)
        sent[record["message_id"]] = record["event_time"]
        producer.produce(events, key=record_key(record), value=serde.encode("event", record))
        producer.poll(0)

    def alive() -> None:
        for service, proc in zip(services, procs, strict=True):
            if proc.poll() is not None:
                raise SystemExit(
                    f"{service} exited with {proc.returncode}; see {workdir}/{name}-{service}.log"
                )

    def out_count(ids: list[str]) -> int:
        return sum(1 for i in ids if tracer.out(i) is not None)

    def run_phase(first: int, rate: float) -> tuple[list[str], float, bool, dict[str, float]]:
        """Produce ``rate``/s for ``--seconds``; wait until all are out. Held: 99% out in grace.
        Also each service's CPU seconds per 1000 events of the phase."""
        count = int(rate * args.seconds)
        cpu = {service: cpu_seconds(proc.pid) for service, proc in zip(services, procs, strict=True)}
        started = time.monotonic()
        for k in range(count):
            while time.monotonic() < started + k / rate:
                time.sleep(0.001)
            send(first + k)
        producer.flush(30)
        seconds = time.monotonic() - started
        ids = [f"ping-{first + k}" for k in range(count)]
        time.sleep(args.grace)  # the bench's own pacing: what is out by then says "held"
        held = out_count(ids) >= 0.99 * count
        wait_for(lambda: alive() or out_count(ids) >= count, 300, f"phase {rate}/s drain")
        used = {
            service: round((cpu_seconds(proc.pid) - cpu[service]) * 1000 / count, 2)
            for service, proc in zip(services, procs, strict=True)
        }
        return ids, seconds, held, used

    phases: dict[str, Any] = {}
    held_at: dict[str, Any] | None = None
    try:
        # Warm-up: one event per person (creates the persons) and the whole chain has answered.
        for n in range(args.persons):
            send(-1 - n)
        producer.flush(30)
        warm = [f"ping-{-1 - n}" for n in range(args.persons)]
        wait_for(lambda: alive() or out_count(warm) >= len(warm), 300, "pipeline warm-up")
        if "loader" in services:
            wait_for(lambda: all(i in queryable.seen for i in warm), 120, "loader warm-up")
        first = 0
        for rate in (args.low_rate, *(float(r) for r in args.rates.split(",") if r)):
            ids, seconds, held, cpu = run_phase(first, rate)
            first += len(ids)
            report = {
                "rate": rate,
                "held": held,
                **phase_report(ids, sent, tracer, queryable, seconds),
                "cpu_s_per_1000": cpu,
            }
            phases["low" if not phases else f"step {rate:g}/s"] = report
            print(json.dumps({name: {f"{rate:g}/s": report["latency_ms"], "held": held}}), file=sys.stderr)
            if len(phases) > 1:
                if not held:
                    break
                held_at = report
        time.sleep(2 * QUERY_EVERY_S + 2)  # last rows to ClickHouse (their latency is reported)
    finally:
        queryable.close()
        tracer.close()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
    return {"events": first, "phases": phases, "held": held_at, "env": extra, "services": services}


def summary(run: dict[str, Any]) -> dict[str, Any]:
    low, top = run["phases"]["low"], run["held"]
    return {
        "low": low["latency_ms"],
        "held events/s": top["produced events/s"] if top else 0,
        "held": top["latency_ms"] if top else {},
        "ClickHouse low": low["queryable_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--low-rate", type=float, default=20.0, help="events/s of the fixed low-rate phase")
    parser.add_argument("--rates", default="50,100,200,400", help="rates stepped up until one is not held")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument(
        "--grace", type=float, default=3.0, help="held: 99%% out this long after the last produce"
    )
    parser.add_argument("--persons", type=int, default=200)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for every service")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        help="NAME:KEY=VALUE,KEY=VALUE: also run the pipeline with these settings first (same broker, "
        "same run), e.g. before:TAGSTREAM_INGEST_BATCH_TIMEOUT_S=0.2; without=segmenter+loader leaves "
        "services out; ratios are now / NAME",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    settings_per_variant = variants(args.compare, args.env)
    with bench_broker() as (base, workdir):
        runs = {
            name: run_pipeline(base, workdir, args, name, extra)
            for name, extra in settings_per_variant.items()
        }
    now = runs["now"]
    low, top = now["phases"]["low"], now["held"] or now["phases"]["low"]
    ratios = {
        "held/low rate": round(top["produced events/s"] / low["produced events/s"], 2),
        "low p99/p50": round(low["latency_ms"]["p99"] / max(1, low["latency_ms"]["p50"]), 2),
    }
    for name, run in runs.items():
        if name != "now":
            before = run["phases"]["low"]["latency_ms"]
            for q in ("p50", "p99"):
                ratios[f"low {q} now/{name}"] = round(low["latency_ms"][q] / max(1, before[q]), 2)
            if run["held"] and now["held"]:
                ratios[f"held rate now/{name}"] = round(
                    now["held"]["produced events/s"] / run["held"]["produced events/s"], 2
                )
    write_result(
        args.json,
        {
            "stage": "pipeline",
            "events": now["events"],
            "rates": {
                "low events/s": round(low["produced events/s"]),
                "held events/s": round(top["produced events/s"]) if now["held"] else 0,
            },
            "ratios": ratios,
            "latency_ms": {f"low {k}": v for k, v in low["latency_ms"].items() if k != "max"}
            | ({f"held {k}": v for k, v in top["latency_ms"].items() if k != "max"} if now["held"] else {})
            | {f"ClickHouse low {k}": v for k, v in low["queryable_ms"].items() if k != "max"},
            "summary": {name: summary(run) for name, run in runs.items()},
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
