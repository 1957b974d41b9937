"""Enricher state per person: RocksDB bytes, changelog bytes and process RSS after N persons.

Every person is one device that logs in (a personalize event naming an external id and an email)
and then sets three attributes: two records per person, an identified profile with a session.
For each size a fresh enricher runs on fresh topics; after a warm-up its RSS is the baseline, then
all persons are produced, and once every profile is out we read: the RSS again, every record of
the two changelog topics (all writes, and only the latest per key = what compaction keeps), and,
after a clean stop, the bytes of each table's RocksDB directories. Per person = size / persons.

With two or more sizes the marginal cost per person is (bytes(big) - bytes(small)) / (big - small)
and 1M persons is extrapolated linearly from the largest size with it, for the bytes on disk and in
the changelogs only: RSS growth is mostly RocksDB memtables (faust's default 64 MiB write buffer, up
to 3 per partition DB) and block cache (2 GiB LRU), which are bounded, so it does not scale linearly.

    .venv/bin/python bench/enricher_state_bench.py --persons 100000 300000
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.enricher_bench import count
from bench.harness import REPO, bench_broker, fresh, produce, wait_for, write_result
from services.common.kafka import make_reader, record_key
from services.common.serde import Serde
from services.common.settings import Settings
from services.common.topics import PROFILES, VALID_EVENTS, VALID_PROFILE_UPDATES
from services.enricher.settings import EnricherSettings
from tests.conftest import settings_env
from tests.enricher_records import T0, event, update

TABLES = ("identity", "persons")
MILLION = 1_000_000


def person_records(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    ids = {"install_id": f"inst-{i:08d}"}
    login = event(
        f"login-{i}", T0 + i, "personalize", external_user_id=f"user-{i}", email=f"u{i}@example.com", **ids
    )
    attrs = {"first_name": f"Name{i % 997}", "city": f"City{i % 113}", "plan": ("free", "pro")[i % 2]}
    return login, update(f"attrs-{i}", T0 + i + 1, attrs, **ids)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def changelog_bytes(s: EnricherSettings, table: str) -> tuple[int, int]:
    """(bytes of every record, bytes of the latest record per key): key + value lengths."""
    name = f"{s.full_app_id}-{table}-changelog"
    reader = make_reader(s)
    total, latest = 0, {}
    try:
        partitions = list(reader.list_topics(name, timeout=10).topics[name].partitions)
        ends = {p: reader.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in partitions}
        reader.assign([TopicPartition(name, p, 0) for p in partitions if ends[p] > 0])
        remaining = {p for p, end in ends.items() if end > 0}
        while remaining:
            for m in reader.consume(5000, timeout=1.0):
                if m.error():
                    continue
                size = len(m.key() or b"") + len(m.value() or b"")
                total += size
                latest[(m.partition(), m.key())] = size if m.value() is not None else 0
                if m.offset() + 1 >= ends[m.partition()]:
                    remaining.discard(m.partition())
    finally:
        reader.close()
    return total, sum(latest.values())


def rocksdb_bytes(state_dir: Path, table: str) -> int:
    dirs = [d for d in state_dir.rglob(f"{table}-*.db") if d.is_dir()]
    return sum(f.stat().st_size for d in dirs for f in d.rglob("*") if f.is_file())


def measure(base: Settings, workdir: Path, persons: int) -> dict[str, Any]:
    s = EnricherSettings(**fresh(base, workdir, f"state-{persons}").model_dump())
    serde = Serde()
    env = {**settings_env(s), "TAGSTREAM_HEALTH_PORT": "0", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "services.cli", "run", "enricher"]
    with open(workdir / f"enricher-{persons}.log", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log, cwd=REPO)
    try:
        warm = event("warm", T0, install_id="warm")
        produce(s, VALID_EVENTS, [(record_key(warm), serde.encode("event", warm))])
        wait_for(lambda: count(s, PROFILES) >= 1, 300, "warm-up")
        baseline = rss_bytes(proc.pid)
        logins, updates = [], []
        for i in range(persons):
            login, attrs = person_records(i)
            logins.append((record_key(login), serde.encode("event", login)))
            updates.append((record_key(attrs), serde.encode("profile_update", attrs)))
        started = time.perf_counter()
        produce(s, VALID_EVENTS, logins)
        produce(s, VALID_PROFILE_UPDATES, updates)
        wait_for(lambda: count(s, PROFILES) >= 1 + 2 * persons, 7200, f"{persons} persons")
        seconds = time.perf_counter() - started
        rss = rss_bytes(proc.pid)
        changelogs = {table: changelog_bytes(s, table) for table in TABLES}
    finally:
        proc.terminate()
        proc.wait(120)
    rocksdb = {table: rocksdb_bytes(s.enricher_state_dir, table) for table in TABLES}
    return {
        "persons": persons,
        "records_per_s": round(2 * persons / seconds),
        "rss_growth": rss - baseline,
        "rocksdb": sum(rocksdb.values()),
        "rocksdb_by_table": rocksdb,
        "changelog_all": sum(c[0] for c in changelogs.values()),
        "changelog_compacted": sum(c[1] for c in changelogs.values()),
        "changelog_by_table": {t: {"all": c[0], "compacted": c[1]} for t, c in changelogs.items()},
    }


METRICS = ("rocksdb", "changelog_compacted", "changelog_all", "rss_growth")
LINEAR = METRICS[:3]  # RSS is bounded by RocksDB's buffers and cache: not extrapolated


def per_person(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Bytes per person: the marginal cost between the two largest sizes, else size / persons."""
    if len(runs) == 1:
        return {m: runs[0][m] / runs[0]["persons"] for m in METRICS}
    small, big = runs[-2], runs[-1]
    return {m: (big[m] - small[m]) / (big["persons"] - small["persons"]) for m in METRICS}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--persons", type=int, nargs="+", default=[100_000])
    parser.add_argument("--json", type=Path, help="also write the result here (bench/run.py)")
    args = parser.parse_args()
    runs = []
    with bench_broker() as (base, workdir):
        for n in sorted(args.persons):
            runs.append(measure(base, workdir, n))
            _report(runs[-1])
    marginal = per_person(runs)
    largest = runs[-1]
    million = {m: largest[m] + (MILLION - largest["persons"]) * marginal[m] for m in LINEAR}
    how = "measured" if largest["persons"] >= MILLION else "extrapolated"
    print(f"per person ({'marginal' if len(runs) > 1 else 'average'}): " + _fmt(marginal))
    print(f"1M persons ({how}): " + ", ".join(f"{m} {v / 2**20:,.0f} MiB" for m, v in million.items()))
    write_result(
        args.json,
        {
            "stage": "enricher state",
            "records": 2 * largest["persons"],
            "rates": {f"enricher {r['persons']:,} persons": r["records_per_s"] for r in runs},
            "ratios": {
                "changelog compacted / rocksdb": round(
                    marginal["changelog_compacted"] / marginal["rocksdb"], 3
                ),
                "rss growth / rocksdb": round(marginal["rss_growth"] / marginal["rocksdb"], 3),
            },
            "bytes_per_person": {m: round(v) for m, v in marginal.items()},
            "one_million_persons_mib": {m: round(v / 2**20) for m, v in million.items()},
            "one_million_method": how,
            "runs": runs,
        },
    )


def _report(run: dict[str, Any]) -> None:
    n = run["persons"]
    print(
        f"{n:,} persons: rocksdb {run['rocksdb'] / n:,.0f} B/person, changelogs "
        f"{run['changelog_compacted'] / n:,.0f} B/person compacted ({run['changelog_all'] / n:,.0f} "
        f"written), RSS +{run['rss_growth'] / n:,.0f} B/person, {run['records_per_s']:,} records/s",
        flush=True,
    )


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{m} {v:,.0f} B" for m, v in values.items())


if __name__ == "__main__":
    main()
