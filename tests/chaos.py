"""Fault tests: the whole pipeline under load while services are SIGKILLed, the broker restarts and
the loader loses ClickHouse; after draining, nothing is lost, doubled or mis-attributed.

    python -m tests.chaos [--long] [--seed N] [--json PATH]       (`make chaos` runs --long)

One run, top to bottom: a private broker (free ports, temp dir) → ingest, enricher, segmenter,
trigger, loader as real subprocesses (`tagstream run NAME`) → a seeded generated population
(duplicates, late and bad records) produced at a steady rate → faults from a seeded schedule,
each fired when a share of the records has been produced → drain (poll until every check holds
and no service group has a lag by `services/common/lag.py`, or a deadline; the report names the
partitions still behind) → checks → report. `tests/integration/test_chaos.py` runs
the short schedule; `TAGSTREAM_LOADER_TEST_UNSAFE_COMMIT_FIRST` is the negative control.

The ClickHouse outage: chDB is embedded in the loader (no server to stop, and we run as root, so
data-dir permissions stop nothing). While the file named by `TAGSTREAM_LOADER_TEST_CLICKHOUSE_DOWN_FILE`
exists, every ClickHouse call of the loader's sink raises the driver's `OperationalError`, which
is what clickhouse-connect raises when a server is unreachable. That exercises the loader's own
recovery (retry the uncommitted batch with the same tokens, never commit, survive a SIGKILL
meanwhile), not the driver's connection handling.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import KafkaException, TopicPartition

from services.common.broker import LocalBroker
from services.common.kafka import ensure_topics, make_producer, make_reader, watermarks
from services.common.lag import PartitionLag, pipeline_partition_lags
from services.common.serde import Serde, SerdeError
from services.common.settings import Settings
from services.common.topics import (
    DEAD_LETTERS,
    ENRICHED,
    ENRICHER_IDENTITY,
    ENRICHER_ROUTED,
    OUTBOUND_TOPICS,
    PROFILES,
    SEGMENT_MEMBERSHIP,
    VALID_TOPICS,
    TopicSpec,
    topic_name,
)
from services.generator.output import encoded
from services.generator.population import Generated, GeneratorConfig, PopulationGenerator
from services.loader.ddl import SEGMENT_FACTS_DATABASE
from services.loader.membership import members_sql
from services.loader.settings import LoaderSettings
from services.segmenter.definitions import load as load_segments
from services.segmenter.sql import compile_segment
from tests.conftest import local_broker_settings, settings_env
from tests.helpers import ServiceProcess, wait_until

SERVICES = ("ingest", "enricher", "segmenter", "trigger", "loader")
# What the loader reads; every record of these is a row in one table or a dead letter of the loader.
LOADER_TOPICS = (ENRICHED, PROFILES, SEGMENT_MEMBERSHIP, DEAD_LETTERS, *OUTBOUND_TOPICS)
TRIGGER_EVENT = "Order Completed"
# Every purchase becomes one webhook message: a webhook needs nothing from the person (no address,
# no consent), transactional means no quiet hours, `always` re-enters on every purchase. So the
# expected messages are exactly the valid purchases, whatever the enricher makes of persons.
CAMPAIGNS = f"""
campaigns:
  - id: chaos-purchase
    transactional: true
    trigger: {{kind: event, name: "{TRIGGER_EVENT}"}}
    reentry: {{mode: always}}
    channels: {{order: [webhook]}}
    templates:
      webhook: {{url: "http://127.0.0.1:9/purchase", body: "{{{{ event.properties }}}}"}}
"""
# Segments whose answer does not depend on the reference time (attributes, whole-history counts),
# so the streamed state and the SQL recomputation are comparable at any moment after the drain.
SEGMENTS = f"""
segments:
  - id: fibre-500
    condition: {{attribute: plan, equals: fibre-500}}
  - id: heavy-users
    condition: {{attribute: monthly_usage_gb, gt: 450}}
  - id: buyers
    condition: {{event: "{TRIGGER_EVENT}", within: 3650d, at_least: 1}}
  - id: never-registered
    condition: {{tag: registration_complete, never: true}}
"""
LOADED_TABLES = ("tags", "events", "locations", "message_events", "profile_updates")


@dataclass(frozen=True)
class Plan:
    """What one run does: the population, the rate, and how many of each fault."""

    persons: int
    load_s: float  # the records are produced evenly over this long
    kills: dict[str, int]  # service -> SIGKILLs (each followed by a restart)
    broker_restarts: int
    clickhouse_outages: int  # each with a loader SIGKILL while ClickHouse is away
    drain_timeout_s: float
    services: tuple[str, ...] = SERVICES  # which services run (upstream first)


SHORT = Plan(
    persons=25,
    load_s=60.0,
    kills={"ingest": 1, "enricher": 1, "trigger": 2},
    broker_restarts=0,
    clickhouse_outages=1,
    drain_timeout_s=150.0,
)
# Only what the negative control needs: the loader SIGKILLed during a ClickHouse outage, and the
# services upstream of it (its check is the loader's own).
NEGATIVE_CONTROL = Plan(
    persons=10,
    load_s=30.0,
    kills={},
    broker_restarts=0,
    clickhouse_outages=1,
    drain_timeout_s=150.0,
    services=("ingest", "enricher", "loader"),  # what the loader's check needs
)
LONG = Plan(
    persons=150,
    load_s=300.0,
    kills={"ingest": 3, "enricher": 2, "segmenter": 2, "trigger": 2, "loader": 2},
    broker_restarts=2,
    clickhouse_outages=2,
    drain_timeout_s=600.0,
)


@dataclass(frozen=True)
class Fault:
    at: float  # share of the records produced when it fires
    kind: str  # "kill", "broker", "clickhouse"
    target: str = ""


def schedule(plan: Plan, seed: int) -> list[Fault]:
    """Faults spread over the load, positions drawn from the seed: evenly spaced slots, jittered,
    assigned in a shuffled order (so a seed decides which fault meets which phase)."""
    rng = random.Random(seed)
    faults = [Fault(0, "kill", name) for name, n in plan.kills.items() for _ in range(n)]
    faults += [Fault(0, "broker")] * plan.broker_restarts
    faults += [Fault(0, "clickhouse", "loader")] * plan.clickhouse_outages
    rng.shuffle(faults)
    slot = 0.8 / max(1, len(faults))
    return [
        Fault(round(0.1 + slot * i + rng.uniform(0, slot * 0.5), 3), f.kind, f.target)
        for i, f in enumerate(faults)
    ]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    seed: int
    sent: int
    injected: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    drained: bool = False
    lagging: list[str] = field(default_factory=list)  # partitions still behind when the drain ended

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def text(self) -> str:
        lines = [f"chaos run, seed {self.seed}: {self.sent} records produced"]
        lines += ["injected:"] + [f"  - {i}" for i in self.injected]
        lines.append(
            f"drained: {'yes' if self.drained else 'NO (deadline passed; checks show what is missing)'}"
        )
        lines += [f"  behind: {lag}" for lag in self.lagging]
        lines += ["checks:"] + [f"  [{'PASS' if c.ok else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks]
        lines.append("RESULT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "sent": self.sent,
            "injected": self.injected,
            "drained": self.drained,
            "lagging": self.lagging,
            "ok": self.ok,
            "checks": [c.__dict__ for c in self.checks],
        }


# -- what the generator says the pipeline must end with --------------------------------------
@dataclass(frozen=True)
class Expected:
    valid: set[str]  # message ids of valid input records (duplicates collapse onto one id)
    bad: Counter[tuple[str | None, str]]  # (message id or None if undecodable, reason) -> count
    purchases: set[str]  # message ids of valid purchase events: one outbound message each

    @classmethod
    def of(cls, items: list[Generated]) -> Expected:
        valid = {i.record["message_id"] for i in items if i.record is not None and i.expected_reason is None}
        bad = Counter(
            (i.record["message_id"] if i.record else None, i.expected_reason)
            for i in items
            if i.expected_reason
        )
        purchases = {
            i.record["message_id"]
            for i in items
            if i.record is not None
            and i.expected_reason is None
            and i.record_type == "event"
            and i.record.get("name") == TRIGGER_EVENT
        }
        return cls(valid, bad, purchases)


# -- the running pipeline ---------------------------------------------------------------------
class Pipeline:
    """Broker + the five services, each restartable; queries go through the loader's API."""

    def __init__(
        self,
        workdir: Path,
        say: Callable[[str], None],
        services: tuple[str, ...] = SERVICES,
        **loader_env: str,
    ) -> None:
        self.names = services
        self.exits: list[str] = []  # services that exited on their own
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.say = say
        base = local_broker_settings(workdir / "data")
        self.settings = Settings(
            data_dir=base.data_dir,
            kafka_port=base.kafka_port,
            kafka_controller_port=base.kafka_controller_port,
            topic_prefix="chaos-",
        )
        self.broker = LocalBroker(self.settings)
        self.clickhouse_down = workdir / "clickhouse-down"
        (workdir / "campaigns.yaml").write_text(CAMPAIGNS)
        (workdir / "segments.yaml").write_text(SEGMENTS)
        self.segments = load_segments(workdir / "segments.yaml")
        env = settings_env(self.settings)
        logs = workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        extra: dict[str, dict[str, str]] = {
            "ingest": {"TAGSTREAM_INSTANCE_ID": "chaos-ingest"},
            "enricher": {
                "TAGSTREAM_ENRICHER_BROKER_SESSION_TIMEOUT_S": "6",
                # every launch is a record to account for: no launch dedup window
                "TAGSTREAM_ENRICHER_LAUNCH_DEDUP_S": "0",
            },
            "segmenter": {
                "TAGSTREAM_SEGMENTER_DEFINITIONS_FILE": str(workdir / "segments.yaml"),
                "TAGSTREAM_SEGMENTER_BROKER_SESSION_TIMEOUT_S": "6",
            },
            "trigger": {
                "TAGSTREAM_TRIGGER_CAMPAIGNS_FILE": str(workdir / "campaigns.yaml"),
                "TAGSTREAM_TRIGGER_BROKER_SESSION_TIMEOUT_S": "6",
                "TAGSTREAM_TRIGGER_TICK_SECONDS": "1",
            },
            "loader": {
                "TAGSTREAM_LOADER_FLUSH_SECONDS": "1",
                "TAGSTREAM_LOADER_SESSION_TIMEOUT_MS": "6000",
                "TAGSTREAM_LOADER_TEST_CLICKHOUSE_DOWN_FILE": str(self.clickhouse_down),
                **loader_env,
            },
        }
        self.services = {
            name: ServiceProcess(name, env, logs / f"{name}.log", **extra[name]) for name in services
        }
        loader = self.services["loader"]
        loader.env["TAGSTREAM_LOADER_PORT"] = str(loader.port)  # the loader serves health on its own port
        self.url = f"http://127.0.0.1:{loader.port}"

    def start(self) -> None:
        self.broker.start()
        ensure_topics(self.settings)
        for name in self.names:
            self.services[name].start(ready_timeout=180)
            self.say(f"started {name}")

    def stop(self) -> None:
        for name in reversed(self.names):
            try:
                self.services[name].terminate(timeout=60)
            except Exception:
                self.services[name].kill()
        self.broker.stop()

    def query(self, sql: str) -> list[list[Any]]:
        response = httpx.post(f"{self.url}/query", content=sql.encode(), timeout=60)
        if response.status_code != 200:
            raise RuntimeError(f"query failed ({response.status_code}): {response.text[:500]}")
        return response.json()["rows"]

    def _loader_retries(self) -> float:
        """The loader's ClickHouse retries; -1 while it does not answer (exited or restarting)."""
        try:
            return self.loader_metric("tagstream_loader_sink_retries_total")
        except OSError:
            return -1.0

    def loader_metric(self, name: str) -> float:
        for line in self.services["loader"].metrics().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def lag(self) -> list[PartitionLag]:
        """Every partition a consumer group of the services is behind on (records after its
        committed offset; transaction markers are not records, timer topics are left out)."""
        return [lag for lags in pipeline_partition_lags(self.settings).values() for lag in lags]

    def positions(
        self, specs: tuple[TopicSpec, ...] = LOADER_TOPICS
    ) -> dict[tuple[str, int, int], tuple[bytes | None, bytes]]:
        """(topic, partition, offset) -> (key, value) of every committed record on these topics
        (default: the loader's input topics)."""
        reader = make_reader(self.settings, **{"isolation.level": "read_committed"})
        found: dict[tuple[str, int, int], tuple[bytes | None, bytes]] = {}
        try:
            for spec in specs:
                name = topic_name(spec, self.settings)
                for partition in range(spec.partitions):
                    tp = TopicPartition(name, partition)
                    low, high = watermarks(reader, tp)
                    if high <= low:
                        continue
                    reader.assign([TopicPartition(name, partition, low)])
                    position, deadline = low, time.monotonic() + 60
                    # transaction markers take offsets too: read until the consumer's position passes
                    # them (an open transaction would hold it back: the deadline)
                    while position < high and time.monotonic() < deadline:
                        for message in reader.consume(num_messages=1000, timeout=1.0):
                            if message.error() is None:
                                found[(name, partition, message.offset())] = (message.key(), message.value())
                        position = reader.position([tp])[0].offset
                        if position < 0:
                            position = low
            return found
        finally:
            reader.close()

    def supervise(self) -> None:
        """A service that exited on its own is a finding: noted (with its log tail) and restarted,
        as its supervisor (Kubernetes) would; the run goes on."""
        for name in self.names:
            process = self.services[name].process
            if process is not None and process.poll() is not None:
                tail = " | ".join(self.services[name].log_tail(8).splitlines())[-1500:]
                self.exits.append(f"{name} exited with {process.returncode}: {tail}")
                self.say(f"!! {self.exits[-1]}")
                self.services[name].start(ready_timeout=180)

    # -- faults ----------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        self.services[name].kill()
        self.services[name].start(ready_timeout=180)

    def restart_broker(self) -> None:
        self.broker.stop()
        self.broker.start()

    def clickhouse_outage(self) -> str:
        """ClickHouse away; once the loader has retried twice (an uncommitted batch in hand) it is
        SIGKILLed; ClickHouse returns and the loader restarts (against a real server that was down,
        its start-up migrations would fail until then). Returns what happened."""
        self.supervise()
        retries = self._loader_retries()
        self.clickhouse_down.touch()
        try:
            wait_until(
                lambda: self._loader_retries() >= retries + 2,
                timeout=180,
                interval=0.5,
                what="the loader to retry without ClickHouse",
            )
            held = "loader SIGKILLed while retrying a batch"
        except AssertionError:  # nothing reached the loader meanwhile (upstream still recovering)
            held = "no batch reached the loader in 180 s; SIGKILLed anyway"
        loader = self.services["loader"].process
        if loader is not None and loader.poll() is not None:  # exited on its own meanwhile
            self.exits.append(f"loader exited with {loader.returncode} during the ClickHouse outage")
            self.say(f"!! {self.exits[-1]}")
        self.services["loader"].kill()
        self.clickhouse_down.unlink()
        self.services["loader"].start(ready_timeout=180)
        return held


# -- the checks ---------------------------------------------------------------------------------
# Names the tests refer to.
LOADER_ONCE = "loader: no Kafka record loaded twice"
INGEST_ONCE = "ingest: every valid input record on *.valid exactly once"
TRIGGER_ONCE = "trigger: one message per purchase on `enriched`"
NONE_LOST = "valid input records: none lost"
NONE_TWICE = "valid input records: none twice"
BAD_DEAD_LETTERED = "bad records: dead-lettered once, with their reason"
SEGMENTS_EQUAL = "segment membership == recomputation"
SEGMENTS_UNMERGED = "segment membership == recomputation, persons never merged"
OUTBOUND_NONE_MISSING = "outbound: a message for every purchase"
OUTBOUND_NONE_DOUBLED = "outbound: no message twice"
KAFKA_TABLES = (
    *LOADED_TABLES,
    *("sessions", "geofence_transitions", "identity_merges", "profiles"),
    *("dead_letters", "segment_membership", "outbound_messages"),
)
LOADER_EVERY = "loader: every Kafka record in ClickHouse"
SERVICES_UP = "services: none exited except when killed"


@dataclass(frozen=True)
class Observed:
    """What ClickHouse holds, read through the loader's API."""

    loaded: dict[str, list[list[Any]]]  # table -> [message_id, person_id, kafka position]
    dead: list[list[Any]]  # [message_id, reason, service]
    messages: list[list[Any]]  # outbound: [message_id, trigger_event_id, person_id]

    @classmethod
    def read(cls, pipeline: Pipeline) -> Observed:
        q = pipeline.query
        loaded = {
            t: q(
                "SELECT message_id, person_id, "
                f"concat(_topic, ':', toString(_partition), ':', toString(_offset)) FROM {t}"
            )
            for t in LOADED_TABLES
        }
        dead = q("SELECT message_id, reason, service FROM dead_letters")
        return cls(loaded, dead, q("SELECT message_id, trigger_event_id, person_id FROM outbound_messages"))

    @property
    def loaded_ids(self) -> set[str]:
        return {row[0] for rows in self.loaded.values() for row in rows}


def trace(pipeline: Pipeline, message_ids: list[str]) -> str:
    """Where records went on their way through the enricher: for each id, the positions (and
    person, kind) on every topic it reached, then the enricher's warnings and errors. A lost
    record's last topic names the stage that lost it."""
    serde, wanted = Serde(), set(message_ids)
    hops: dict[str, list[str]] = {mid: [] for mid in message_ids}
    stages = (*VALID_TOPICS, ENRICHER_IDENTITY, ENRICHER_ROUTED, ENRICHED)
    order = {topic_name(spec, pipeline.settings): i for i, spec in enumerate(stages)}
    found = pipeline.positions(stages).items()
    for (topic, partition, offset), (_, value) in sorted(found, key=lambda f: (order[f[0][0]], f[0])):
        try:
            _, record = serde.decode(value)
        except SerdeError:
            continue
        mid = str(record.get("message_id", ""))
        base = mid.split(":")[0]  # derived records (session_start...) carry the source id first
        if base in wanted:
            who = f" {record['person_id']} {record['kind']}" if "person_id" in record else ""
            hops[base].append(f"{topic}:{partition}:{offset}{who}{'' if mid == base else ' ' + mid}")
    log = pipeline.services["enricher"].log_path
    notable = [
        line[:300]
        for line in (log.read_text(errors="replace").splitlines() if log.exists() else [])
        if '"level": "info"' not in line and line.strip() and not line.startswith(("  ", "---"))
    ]
    return f"{hops}; enricher log, not info: {len(notable)} lines {notable[-8:]}"


def complete(pipeline: Pipeline, expected: Expected) -> bool:
    """Everything expected has arrived (the drain's goal; doubles are for the checks to find)."""
    seen = Observed.read(pipeline)
    dead_ids = {row[0] for row in seen.dead}
    undecodable = sum(1 for row in seen.dead if row[0].startswith("dlq-"))
    return (
        expected.valid <= seen.loaded_ids | dead_ids
        and {mid for mid, _ in expected.bad if mid} <= dead_ids
        and undecodable >= expected.bad[(None, "undecodable")]
        and expected.purchases <= {row[1] for row in seen.messages}
    )


def check(pipeline: Pipeline, expected: Expected, now_ms: int) -> list[Check]:
    q = pipeline.query
    seen = Observed.read(pipeline)
    checks: list[Check] = []
    serde = Serde()
    # The loader's own guarantee, 1: every record of its topics is a row (or its dead letter).
    # ReplacingMergeTree tables keep one row per key by design: `profiles` the latest profile per
    # person (checked as such), `identity_merges` one row per merged-away person.
    in_kafka = pipeline.positions()
    profiles_topic = topic_name(PROFILES, pipeline.settings)
    rows = {
        (t, int(p), int(o))
        for table in KAFKA_TABLES
        if table != "profiles"
        for t, p, o in q(f"SELECT _topic, _partition, _offset FROM {table}")
    }
    rows |= {
        (t, int(p), int(o))
        for t, p, o in q(
            "SELECT source_topic, source_partition, source_offset FROM dead_letters WHERE service = 'loader'"
        )
    }
    merged_away = {row[0] for row in q("SELECT from_person_id FROM identity_merges")}
    # A byte-identical copy of a record shortly before it (an upstream re-send) is not loaded by
    # design (services/loader/copies.py): accounted for, not missing.
    window = LoaderSettings().loader_copy_window
    earlier: dict[tuple[str, int, bytes], int] = {}
    copies = set()
    for (topic, partition, offset), (_, value) in sorted(in_kafka.items()):
        seen_at = earlier.get((topic, partition, value))
        if seen_at is not None and offset - seen_at <= window and topic != profiles_topic:
            copies.add((topic, partition, offset))
        earlier[(topic, partition, value)] = offset
    not_loaded = set()
    for position in set(in_kafka) - rows - copies:
        if position[0] == profiles_topic:
            continue
        _, value = in_kafka[position]
        try:
            _, envelope = serde.decode(value)
        except SerdeError:  # an undecodable record is simply not loaded
            envelope = {}
        if not (envelope.get("kind") == "merge" and envelope.get("person_id") in merged_away):
            not_loaded.add(position)
    latest: dict[bytes | None, int] = {}
    for (topic, _, offset), (key, _) in sorted(in_kafka.items()):
        if topic == profiles_topic:
            latest[key] = offset
    stored = {str(k): int(o) for k, o in q("SELECT person_id, _offset FROM profiles FINAL")}
    stale = [k for k, o in latest.items() if stored.get((k or b"").decode()) != o]
    per_topic = Counter(t for t, _, _ in not_loaded)
    checks.append(
        Check(
            LOADER_EVERY,
            not not_loaded and not stale,
            f"records on its topics={len(in_kafka)}; not in ClickHouse nor refused: "
            f"{dict(per_topic) or 'none'} {sorted(not_loaded)[:3]}; "
            f"persons whose latest profile is not the stored one: {len(stale)} of {len(latest)}",
        )
    )
    # 2: one row per Kafka record and table (the offset is on every row).
    twice = {}
    for table in KAFKA_TABLES:
        count, unique = q(f"SELECT count(), uniqExact(_topic, _partition, _offset) FROM {table}")[0]
        if count != unique:
            twice[table] = count - unique
    checks.append(Check(LOADER_ONCE, not twice, f"rows beyond one per record: {twice or 'none'}"))
    # Ingest's guarantee (transactions): each valid input once on its *.valid topic, nothing else.
    on_valid = Counter(
        serde.decode(value)[1]["message_id"] for _, value in pipeline.positions(VALID_TOPICS).values()
    )
    ingest_missing = expected.valid - set(on_valid)
    ingest_twice = sorted(mid for mid, n in on_valid.items() if n > 1)
    ingest_extra = set(on_valid) - expected.valid
    checks.append(
        Check(
            INGEST_ONCE,
            not ingest_missing and not ingest_twice and not ingest_extra,
            f"valid sent={len(expected.valid)} on *.valid={sum(on_valid.values())} "
            f"missing={sorted(ingest_missing)[:3] or 'none'} twice={ingest_twice[:3] or 'none'} "
            f"unexpected={len(ingest_extra)}",
        )
    )
    # Every valid input record exactly once: sent valid ids == loaded ids + dead-lettered downstream.
    dead_ids = {row[0] for row in seen.dead}
    loaded = seen.loaded_ids
    dead_valid = expected.valid & dead_ids  # valid for ingest, refused by a later service
    missing = expected.valid - loaded - dead_ids
    extra = loaded - expected.valid
    reasons = Counter(f"{row[2]}/{row[1]}" for row in seen.dead if row[0] in dead_valid)
    # A valid record a service parked for a bug (internal_error) is lost to the user all the same.
    parked = sorted(row[0] for row in seen.dead if row[0] in dead_valid and row[1] == "internal_error")
    checks.append(
        Check(
            NONE_LOST,
            not missing and not extra and not parked,
            f"sent valid={len(expected.valid)} loaded={len(loaded)} "
            f"dead-lettered downstream={len(dead_valid)} {dict(reasons) or ''} "
            f"missing={len(missing)} {sorted(missing)[:5]} unexpected={len(extra)}"
            + (f"; where they went: {trace(pipeline, sorted(missing)[:5])}" if missing else "")
            + (f"; parked for a bug: {parked[:5]} {trace(pipeline, parked[:3])}" if parked else ""),
        )
    )
    counts = []
    doubles = []
    for table, rows in seen.loaded.items():
        ids = Counter(row[0] for row in rows)
        counts.append(f"{table} {len(rows)}/{len(ids)}")
        for mid, n in ids.items():
            if n > 1:
                copies = [row for row in rows if row[0] == mid]
                persons = sorted({str(row[1]) for row in copies})
                doubles.append(f"{table} {mid} x{n} persons={persons} at {[row[2] for row in copies]}")
    both = loaded & dead_valid
    checks.append(
        Check(
            NONE_TWICE,
            not doubles and not both,
            f"count()/uniqExact(message_id): {', '.join(counts)}; twice: {doubles[:3] or 'none'}"
            f"{f'; loaded and dead-lettered: {len(both)}' if both else ''}",
        )
    )
    # Every injected bad record dead-lettered once with its reason.
    by_id = Counter(row[0] for row in seen.dead)
    reason_of = {row[0]: row[1] for row in seen.dead}
    wrong = [
        f"{mid}: expected {reason}, got {reason_of.get(mid)}"
        for (mid, reason) in expected.bad
        if mid is not None and reason_of.get(mid) != reason
    ]
    undecodable = sum(1 for row in seen.dead if row[0].startswith("dlq-") and row[1] == "undecodable")
    want_undecodable = expected.bad[(None, "undecodable")]
    twice_dead = sorted(mid for mid, n in by_id.items() if n > 1)
    checks.append(
        Check(
            BAD_DEAD_LETTERED,
            not wrong and undecodable == want_undecodable and not twice_dead,
            f"injected={sum(expected.bad.values())} {dict(Counter(r for _, r in expected.bad.elements()))}; "
            f"wrong or missing={wrong[:3] or 'none'}; undecodable {undecodable}/{want_undecodable}; "
            f"dead letters twice={twice_dead[:3] or 'none'}",
        )
    )
    # Streamed membership == the SQL recomputation over the loaded facts, at the same time.
    merged = {
        row[0]
        for row in q(
            "SELECT from_person_id FROM identity_merges UNION ALL SELECT to_person_id FROM identity_merges"
        )
    }
    diffs, diffs_unmerged, sizes = [], [], []
    for segment in pipeline.segments.values():
        streamed = {row[0] for row in q(members_sql(segment.id))}
        recomputed = {row[0] for row in q(compile_segment(segment, now_ms, SEGMENT_FACTS_DATABASE))}
        sizes.append(f"{segment.id} {len(streamed)}/{len(recomputed)}")
        only_streamed, only_sql = streamed - recomputed, recomputed - streamed
        if only_streamed or only_sql:
            in_merges = len((only_streamed | only_sql) & merged)
            diffs.append(f"{segment.id}: +{len(only_streamed)} -{len(only_sql)} ({in_merges} in a merge)")
        if (only_streamed | only_sql) - merged:
            diffs_unmerged.append(
                f"{segment.id}: +{sorted(only_streamed - merged)[:3]} -{sorted(only_sql - merged)[:3]}"
            )
    detail = f"streamed/recomputed: {', '.join(sizes)}"
    checks.append(Check(SEGMENTS_EQUAL, not diffs, f"{detail}; {'; '.join(diffs) or 'equal'}"))
    checks.append(
        Check(
            SEGMENTS_UNMERGED,
            not diffs_unmerged,
            f"{len(merged)} persons in merges left out; {'; '.join(diffs_unmerged) or 'equal'}",
        )
    )
    # One outbound message per valid purchase (ids are deterministic: a replay gives the same id).
    per_trigger = Counter(row[1] for row in seen.messages)
    per_id = Counter(row[0] for row in seen.messages)
    missing_msgs = expected.purchases - set(per_trigger)
    unexpected = set(per_trigger) - expected.purchases
    checks.append(
        Check(
            OUTBOUND_NONE_MISSING,
            not missing_msgs and not unexpected,
            f"purchases={len(expected.purchases)} "
            f"with a message={len(expected.purchases & set(per_trigger))} "
            f"missing={sorted(missing_msgs)[:3] or 'none'} unexpected={len(unexpected)}",
        )
    )
    doubled_ids = [mid for mid, n in per_id.items() if n > 1]
    doubled_triggers = [t for t, n in per_trigger.items() if n > 1]
    checks.append(
        Check(
            OUTBOUND_NONE_DOUBLED,
            not doubled_ids and not doubled_triggers,
            f"messages={len(seen.messages)} unique ids={len(per_id)} "
            f"purchases with more than one message={doubled_triggers[:3] or 'none'}",
        )
    )
    # The trigger's own guarantee: every purchase it was given (as enriched, under whichever person)
    # has a message, for that person or, once it was merged into another, for a survivor (the
    # trigger hands a merged-away person's state and later events over), and no more messages than
    # persons it was given under (the enricher's known copy under a second person may get its own).
    into: dict[str, set[str]] = {}
    for source, target in q("SELECT from_person_id, to_person_id FROM identity_merges"):
        into.setdefault(source, set()).add(target)
    given: dict[str, set[str]] = {}
    for mid, person, _ in seen.loaded["events"]:
        if mid in expected.purchases:
            given.setdefault(mid, set()).add(person)
    reach = {mid: set().union(*(_with_survivors(p, into) for p in persons)) for mid, persons in given.items()}
    sent = Counter((row[1], row[2]) for row in seen.messages)
    per_purchase = Counter(mid for mid, person in sent.elements() if person in reach.get(mid, ()))
    # each (purchase, person) given: a message for that person or a survivor of it
    not_sent = sorted(
        (mid, p)
        for mid, ps in given.items()
        for p in ps
        if not any(sent[mid, x] for x in _with_survivors(p, into))
    )
    too_many = sorted(mid for mid, n in per_purchase.items() if n > len(given[mid]))
    stray = sorted(k for k in sent if k[1] not in reach.get(k[0], ()))
    checks.append(
        Check(
            TRIGGER_ONCE,
            not not_sent and not too_many and not stray,
            f"purchases on enriched={len(given)} (under two persons: "
            f"{sum(1 for p in given.values() if len(p) > 1)}) messages={sum(sent.values())} "
            f"without a message={not_sent[:3] or 'none'} more than given={too_many[:3] or 'none'} "
            f"for no such input or its survivor={stray[:3] or 'none'}",
        )
    )
    return checks


def _with_survivors(person: str, into: dict[str, set[str]]) -> set[str]:
    """``person`` and every person it was merged into, following chains."""
    found, todo = {person}, [person]
    while todo:
        for target in into.get(todo.pop(), ()):
            if target not in found:
                found.add(target)
                todo.append(target)
    return found


# -- one run -------------------------------------------------------------------------------------
def run(
    plan: Plan,
    seed: int,
    workdir: Path,
    say: Callable[[str], None] = print,
    **loader_env: str,
) -> Report:
    now_ms = int(time.time() * 1000)
    items = PopulationGenerator(GeneratorConfig(plan.persons, seed, now_ms)).generate()
    expected = Expected.of(items)
    report = Report(seed, len(items))
    pipeline = Pipeline(workdir, say, plan.services, **loader_env)
    faults = schedule(plan, seed)
    say(f"{len(items)} records, {len(faults)} faults: {[(f.at, f.kind, f.target) for f in faults]}")
    try:
        pipeline.start()
        produced = [0]  # acknowledged by the broker
        producer_error: list[BaseException] = []

        def produce() -> None:
            """Evenly over plan.load_s: one producer, paced; retries through broker restarts are
            librdkafka's (idempotent producer), failures are reported."""
            producer = make_producer(pipeline.settings)
            failures: list[str] = []

            def delivered(err: Any, _msg: Any) -> None:
                if err is None:
                    produced[0] += 1
                else:
                    failures.append(str(err))

            interval = plan.load_s / len(items)
            started = time.monotonic()
            try:
                for i, (topic, key, value) in enumerate(encoded(pipeline.settings, items)):
                    # pacing the load; poll serves delivery callbacks meanwhile (and may return early)
                    while (ahead := started + i * interval - time.monotonic()) > 0:
                        producer.poll(ahead)
                    while True:
                        try:
                            producer.produce(topic, value=value, key=key, on_delivery=delivered)
                            break
                        except BufferError:
                            producer.poll(0.2)
                    producer.poll(0)
                if producer.flush(300) or failures:
                    raise RuntimeError(f"records not acknowledged: {failures[:3]}")
            except BaseException as exc:  # reported by the main thread
                producer_error.append(exc)

        thread = threading.Thread(target=produce, name="chaos-producer", daemon=True)
        thread.start()
        for fault in faults:
            wait_until(
                lambda f=fault: pipeline.supervise() or produced[0] >= f.at * len(items) or producer_error,
                timeout=3600,
                interval=0.5,
                what=f"{fault.at:.0%} of the records produced",
            )
            started = time.monotonic()
            if fault.kind == "kill":
                pipeline.kill(fault.target)
                what = f"SIGKILL {fault.target} + restart"
            elif fault.kind == "broker":
                pipeline.restart_broker()
                what = "broker stop + start"
            else:
                what = f"ClickHouse outage for the loader ({pipeline.clickhouse_outage()})"
            report.injected.append(
                f"{what} at {fault.at:.0%} of the load ({time.monotonic() - started:.0f} s)"
            )
            say(report.injected[-1])
        while thread.is_alive():
            pipeline.supervise()
            thread.join(timeout=1.0)
        if producer_error:
            raise RuntimeError("producing the population failed") from producer_error[0]
        say("all records produced; draining")
        report.drained, report.lagging = _drain(pipeline, expected, plan.drain_timeout_s)
        pipeline.supervise()
        exits = Check(
            SERVICES_UP, not pipeline.exits, f"{len(pipeline.exits)} exits: {pipeline.exits[:3] or 'none'}"
        )
        report.checks = [exits, *check(pipeline, expected, now_ms)]
    finally:
        pipeline.stop()
    return report


def _drain(
    pipeline: Pipeline, expected: Expected, timeout: float, idle_s: float = 20.0
) -> tuple[bool, list[str]]:
    """Until every consumer group has committed everything and every expected record, dead letter
    and message has arrived; or, if something never arrives, until the groups have been idle for
    ``idle_s`` (nothing more can come). False only if the deadline passes first; with it, the
    partitions some group was still behind on at the last look."""
    idle_since: list[float | None] = [None]
    behind: list[str] = []

    def settled() -> bool:
        try:
            pipeline.supervise()
            done = complete(pipeline, expected)
            lagging = [str(lag) for lag in pipeline.lag()]
            if lagging != behind:
                pipeline.say(f"behind: {lagging or 'nothing'}")
                behind[:] = lagging
            if lagging:
                idle_since[0] = None
                return False
            if done:
                return True
        except (httpx.HTTPError, RuntimeError, KafkaException):
            return False
        idle_since[0] = idle_since[0] or time.monotonic()
        return time.monotonic() - idle_since[0] >= idle_s

    try:
        wait_until(settled, timeout=timeout, interval=2.0, what="the pipeline to drain")
        return True, []
    except AssertionError:
        return False, behind


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", action="store_true", help="the long schedule (`make chaos`)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workdir", type=Path, help="keep data and logs here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="write the report as JSON here")
    parser.add_argument("--no-faults", action="store_true", help="baseline: the same load, nothing injected")
    parser.add_argument(
        "--unsafe-commit-first",
        action="store_true",
        help="negative control: the loader commits before inserting (the checks must fail)",
    )
    args = parser.parse_args(argv)
    plan = LONG if args.long else SHORT
    if args.no_faults:
        plan = dataclasses.replace(plan, kills={}, broker_restarts=0, clickhouse_outages=0)
    loader_env = {"TAGSTREAM_LOADER_TEST_UNSAFE_COMMIT_FIRST": "true"} if args.unsafe_commit_first else {}
    with tempfile.TemporaryDirectory(prefix="tagstream-chaos-") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()  # the broker runs in its own directory
        report = run(
            plan, args.seed, workdir, lambda line: print(line, file=sys.stderr, flush=True), **loader_env
        )
    print(report.text())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
