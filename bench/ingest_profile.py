"""Where ingest spends its time per record: cProfile over the pure record path, or the service loop.

    .venv/bin/python bench/ingest_profile.py [--records 50000] [--top 25]
    .venv/bin/python bench/ingest_profile.py --service [--records 50000]

The first form runs ``pipeline.process`` (size → decode → normalise → validate → dedupe → encode)
over the bench's generated tag hits, no broker; it prints µs per record with and without the
profiler and the functions that cost most. ``--service`` runs the ingest service under cProfile
against a bench broker (as ``ingest_bench.py`` does) and prints the same table for the whole loop
(consume, process, produce, transactions). Profiles find per-record cost; speed is judged only by
the ratios of ``ingest_bench.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.harness import Variant, bench_broker, measure
from bench.ingest_bench import tag_hits
from services.common.serde import Serde
from services.common.steps import SourcePosition
from services.common.topics import TAGS, VALID_TAGS
from services.ingest.dedupe import DedupeStore
from services.ingest.definitions import Definitions
from services.ingest.main import limits_from
from services.ingest.pipeline import Context, Valid, process
from services.ingest.settings import IngestSettings


def record_path(records: int) -> Path:
    """Profile ``process`` over generated records; return the stats file."""
    settings = IngestSettings()
    ctx = Context(Serde(), limits_from(settings), Definitions.parse(""), DedupeStore(86_400_000), 256 * 1024)
    sources = [
        SourcePosition("tags", 0, i, key, value)
        for i, (key, value) in enumerate(tag_hits("p-", records, 500))
    ]

    def run() -> int:
        ctx.dedupe = DedupeStore(86_400_000)
        now_ms = int(time.time() * 1000)
        return sum(isinstance(process(s, "tags", now_ms, ctx), Valid) for s in sources)

    started = time.perf_counter()
    assert run() == records, "every generated record should pass"
    plain = time.perf_counter() - started
    print(f"process(): {plain / records * 1e6:.1f} µs/record without the profiler")
    out = Path(tempfile.mkdtemp(prefix="ingest-profile-")) / "record_path.prof"
    profiler = cProfile.Profile()
    profiler.runcall(run)
    profiler.dump_stats(out)
    return out


def service_loop(records: int) -> Path:
    """Run the ingest service under cProfile through one bench measurement; return the stats file."""
    out = Path(tempfile.mkdtemp(prefix="ingest-profile-")) / "service.prof"
    argv = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "services.cli", "run", "ingest"]
    with bench_broker() as (base, workdir):
        measured = measure(
            Variant("ingest-profiled", argv, TAGS, VALID_TAGS),
            base,
            workdir,
            tag_hits("warm-", 200, 500),
            tag_hits("run-", records, 500),
        )
    print(f"ingest under cProfile: {measured.rate:.0f} records/s (profiler overhead included)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--service", action="store_true", help="profile the service loop on a broker")
    args = parser.parse_args()
    path = service_loop(args.records) if args.service else record_path(args.records)
    stats = pstats.Stats(str(path))
    print(f"profile: {path}")
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
