"""Enriched records/s through `tagstream run segmenter` with 10, 100 and 1,000 segments defined, and
through a bare confluent-kafka passthrough, on the same broker in the same run.

The records are the core bench's Zipf workload (``services.segmenter.bench``: events and attribute
updates over 1,000 names, segment i reads event i and attribute i) as `enriched` envelopes, the
same records for every variant. Each segmenter is a warmed-up subprocess on fresh topics; the clock
runs until its ``segmenter_records_total`` has counted every record. Reported: records/s, the
ratio 1,000/10 segments, each variant's ratio to the passthrough, and the share of records some
segment reads (10 segments read ~40% of them, 1,000 all: docs/segments.md, "Speed"). Per-person
state size comes from the core bench (same segments, same facts). Only ratios are meaningful.

    .venv/bin/python bench/segmenter_bench.py [--records 10000] [--persons 500] [--json PATH]

Uses ``TAGSTREAM_KAFKA_BOOTSTRAP`` if set, else starts a local broker in a temp dir.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.harness import (
    REPO,
    Keyed,
    bench_broker,
    fresh,
    measure,
    passthrough,
    produce,
    wait_for,
    write_result,
)
from services.common.settings import Settings
from services.common.topics import ENRICHED, SEGMENT_MEMBERSHIP
from services.segmenter.bench import CATALOGUE, segments, stream
from services.segmenter.index import Index
from services.segmenter.stream import dump
from tests import segmenter_records as sr
from tests.conftest import free_port, settings_env

COUNTS = (10, 100, 1000)


def processed(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(v) for v in re.findall(r"^segmenter_records_total\{[^}]*\} (\S+)$", text, re.M))


def segmenter_rate(base: Settings, workdir: Path, n: int, warm: list[Keyed], run: list[Keyed]) -> float:
    s = fresh(base, workdir, f"segmenter-{n}")
    definitions = workdir / f"segments-{n}.yaml"
    definitions.write_text(yaml.safe_dump({"segments": dump(segments(n))}))
    port = free_port()
    env = {**settings_env(s), "TAGSTREAM_HEALTH_PORT": str(port),
           "TAGSTREAM_SEGMENTER_DEFINITIONS_FILE": str(definitions)}  # fmt: skip
    with open(workdir / f"segmenter-{n}.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "run", "segmenter"], env=env,
                                stdout=log, stderr=log, cwd=REPO)  # fmt: skip
    try:

        def counted(target: int) -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"segmenter exited with {proc.returncode}; see {workdir}/segmenter-{n}.log")
            try:
                return processed(port) >= target
            except OSError:
                return False

        produce(s, ENRICHED, warm)
        wait_for(lambda: counted(len(warm)), 180, f"segmenter ({n} segments) warm-up")
        started = time.perf_counter()
        produce(s, ENRICHED, run)
        wait_for(lambda: counted(len(warm) + len(run)), 900, f"segmenter ({n} segments) run")
        return len(run) / (time.perf_counter() - started)
    finally:
        proc.terminate()
        proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--persons", type=int, default=500)
    parser.add_argument("--json", type=Path, help="also write the result here (bench/run.py)")
    args = parser.parse_args()
    facts = [fact for fact, _ in stream(args.records + 100, args.persons, CATALOGUE)]
    envelopes = [e for i, fact in enumerate(facts) for e in sr.from_fact(fact, f"m{i}")]
    records = [(e["person_id"].encode(), sr.encode(e)) for e in envelopes]
    warm, run = records[:100], records[100:]
    indexes = {n: Index.build(segments(n)) for n in COUNTS}
    read = {
        n: sum(1 for f in facts[100:] if index.segments_for(f)) / len(run) for n, index in indexes.items()
    }
    with bench_broker() as (base, workdir):
        bare = measure(passthrough(ENRICHED, SEGMENT_MEMBERSHIP), base, workdir, warm, run)
        rates = {"passthrough": bare.rate}
        for n in COUNTS:
            rates[f"{n} segments"] = segmenter_rate(base, workdir, n, warm, run)
    ratios = {"1000/10 segments": rates["1000 segments"] / rates["10 segments"]}
    ratios |= {f"{n} segments/passthrough": rates[f"{n} segments"] / rates["passthrough"] for n in COUNTS}
    result = {
        "stage": "segmenter",
        "records": len(run),
        "persons": args.persons,
        "rates": {name: round(rate) for name, rate in rates.items()},
        "ratios": {name: round(ratio, 3) for name, ratio in ratios.items()},
        "share of records a segment reads": {f"{n} segments": round(read[n], 3) for n in COUNTS},
    }
    write_result(args.json, result)


if __name__ == "__main__":
    main()
