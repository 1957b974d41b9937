"""What every stage benchmark shares: one broker, fresh topics per variant, a bare confluent-kafka
passthrough as the baseline, a read-committed output counter, and a results file.

A *variant* is a subprocess that consumes one topic and produces another (a tagstream service or
a passthrough). It is warmed up (its group joined, its first records through) before the clock
starts; the clock runs from the first produced record to the last output a read-committed consumer
sees. Only ratios between variants of one run mean anything: the machine is shared and noisy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

from services.common.broker import LocalBroker  # noqa: E402
from services.common.kafka import client_config, ensure_topics, make_consumer, make_producer  # noqa: E402
from services.common.settings import Settings  # noqa: E402
from services.common.topics import TopicSpec, spec_for, topic_name  # noqa: E402
from tests.conftest import free_port, settings_env  # noqa: E402

Keyed = tuple[bytes | None, bytes]


@contextmanager
def bench_broker() -> Iterator[tuple[Settings, Path]]:
    """``TAGSTREAM_KAFKA_BOOTSTRAP`` if set, else a local KRaft broker in a temp dir (kept, with the
    variants' logs, when ``TAGSTREAM_BENCH_KEEP=1``)."""
    keep = os.environ.get("TAGSTREAM_BENCH_KEEP") == "1"
    workdir = Path(tempfile.mkdtemp(prefix="tagstream-bench-"))
    try:
        yield from _with_broker(workdir)
    finally:
        if keep:
            print(f"bench work dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _with_broker(workdir: Path) -> Iterator[tuple[Settings, Path]]:
    if os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP"):
        yield Settings(), workdir
        return
    local = Settings(data_dir=workdir / "broker", kafka_port=free_port(), kafka_controller_port=free_port())
    broker = LocalBroker(local)
    broker.start()
    try:
        yield local.model_copy(update={"kafka_bootstrap": local.bootstrap_servers}), workdir
    finally:
        broker.stop()


def variants(compare: list[str], env: list[str]) -> dict[str, dict[str, str]]:
    """``--compare NAME:KEY=VALUE,...`` and ``--env KEY=VALUE`` as settings per variant; the run
    under ``--env`` is "now", last (ratios are now / NAME)."""
    out: dict[str, dict[str, str]] = {}
    for spec in compare:
        name, _, pairs = spec.partition(":")
        out[name] = dict(kv.split("=", 1) for kv in pairs.split(",") if kv)
    out["now"] = dict(kv.split("=", 1) for kv in env)
    return out


def fresh(base: Settings, workdir: Path, name: str) -> Settings:
    """Settings with their own topic prefix and data dir; every declared topic created."""
    s = base.model_copy(update={"topic_prefix": f"b{uuid.uuid4().hex[:8]}-", "data_dir": workdir / name})
    ensure_topics(s)
    return s


def produce(settings: Settings, spec: TopicSpec, records: Sequence[Keyed]) -> None:
    producer = make_producer(settings)
    name = topic_name(spec, settings)
    for key, value in records:
        while True:
            try:
                producer.produce(name, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)


class OutputCounter:
    """Counts what a read-committed consumer sees on a topic (transaction markers and aborted
    records excluded, unlike high watermarks)."""

    def __init__(self, settings: Settings, spec: TopicSpec) -> None:
        name = topic_name(spec, settings)
        config = {
            **client_config(settings),
            "group.id": f"bench-count-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(name, p, 0) for p in range(spec.partitions)])
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._consumer.consume(1000, timeout=0.2)
            self.count += sum(1 for m in batch if not m.error())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.05)


@dataclass
class Variant:
    """A process to measure: ``argv`` reads ``source`` and writes ``sink``; ``outputs(n)`` is how
    many sink records n inputs give (e.g. the enricher adds one session start per device)."""

    name: str
    argv: list[str]
    source: TopicSpec
    sink: TopicSpec
    outputs: Callable[[int], int] = lambda n: n
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Measured:
    rate: float  # records/s of the run, wall clock: first produced record to last output seen
    cpu_us: float  # the variant process's CPU (user + system, all its threads) per run record, µs


def _cpu_seconds(pid: int) -> float:
    """CPU time of a running process's live threads (Linux schedstat: nanoseconds, where
    /proc/PID/stat counts 10 ms ticks, too coarse for a passthrough's few ms per thousand)."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            total += int(stat.read_text().split()[0])
    return total / 1e9


def measure(
    variant: Variant, base: Settings, workdir: Path, warm: Sequence[Keyed], run: Sequence[Keyed]
) -> Measured:
    """Records/s of ``run`` through the variant, after ``warm`` went through, and the variant's
    CPU per record: on a shared machine the CPU cost per record varies far less than the rate."""
    s = fresh(base, workdir, variant.name)
    env = {**settings_env(s), "TAGSTREAM_HEALTH_PORT": "0", "PYTHONPATH": str(REPO), **variant.env}
    counter = OutputCounter(s, variant.sink)
    with open(workdir / f"{variant.name}.log", "wb") as log:
        proc = subprocess.Popen(variant.argv, env=env, stdout=log, stderr=log, cwd=REPO)
    try:
        produce(s, variant.source, warm)

        def reached(target: int) -> bool:
            if proc.poll() is not None:
                log = workdir / f"{variant.name}.log"
                raise SystemExit(f"{variant.name} exited with {proc.returncode}; see {log}")
            return counter.count >= target

        wait_for(lambda: reached(variant.outputs(len(warm))), 180, f"{variant.name} warm-up")
        before = counter.count
        cpu_before = _cpu_seconds(proc.pid)
        started = time.perf_counter()
        produce(s, variant.source, run)
        target = variant.outputs(len(warm) + len(run))
        wait_for(lambda: reached(target), 900, f"{variant.name} run ({counter.count}/{target})")
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds(proc.pid) - cpu_before  # includes idle polling while records arrive
        assert before + len(run) <= counter.count
        return Measured(len(run) / elapsed, cpu / len(run) * 1e6)
    finally:
        proc.terminate()
        proc.wait(60)
        counter.close()


def passthrough(
    source: TopicSpec, sink: TopicSpec, transactional: bool = False, batch_size: int = 1000
) -> Variant:
    name = "passthrough-txn" if transactional else "passthrough"
    argv = [sys.executable, str(Path(__file__)), source.name, sink.name, str(batch_size)]
    return Variant(name, argv + (["--transactional"] if transactional else []), source, sink)


def run_passthrough(source: str, sink: str, transactional: bool, batch_size: int = 1000) -> None:
    """A bare confluent-kafka loop: consume a batch, produce it unchanged, commit after delivery
    (or, transactional, in one transaction with the offsets, as ingest does)."""
    s = Settings()
    group = f"{s.topic_prefix}bench-passthrough"
    consumer = make_consumer(s, group, **({"isolation.level": "read_committed"} if transactional else {}))
    # ingest's transactional settings (services/ingest/main.py), so the floor is what an
    # exactly-once stage pays: with librdkafka's 100 ms retry backoff nearly every
    # send_offsets_to_transaction here waited out a CONCURRENT_TRANSACTIONS retry (100-147 ms).
    extra = {"transactional.id": f"{group}-txn", "retry.backoff.ms": 10} if transactional else {}
    producer = make_producer(s, **extra)
    if transactional:
        producer.init_transactions()
    consumer.subscribe([topic_name(spec_for(source, s), s)])
    out = topic_name(spec_for(sink, s), s)
    while True:
        # The same batch size and wait as the stage's (ingest's defaults unless told), so only the
        # work per record differs.
        batch = [m for m in consumer.consume(batch_size, timeout=0.2) if not m.error()]
        if not batch:
            continue
        if transactional:
            producer.begin_transaction()
        for message in batch:
            producer.produce(out, key=message.key(), value=message.value())
        if transactional:
            # one entry per partition (the batch's last offset + 1), as ingest sends them
            last = {(m.topic(), m.partition()): m.offset() for m in batch}
            offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata())
            producer.commit_transaction()
        else:
            producer.flush()
            for message in batch:
                consumer.store_offsets(message)
            consumer.commit(asynchronous=True)


def write_result(path: Path | None, result: dict[str, Any]) -> None:
    """Print the result; with ``--json PATH`` also write it for ``bench/run.py``."""
    print(json.dumps(result, indent=2))
    if path:
        path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":  # the passthrough child: harness.py SOURCE SINK BATCH_SIZE [--transactional]
    run_passthrough(sys.argv[1], sys.argv[2], "--transactional" in sys.argv[4:], int(sys.argv[3]))
