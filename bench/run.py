"""``make bench``: every benchmark in one run on one broker; results as JSON, markdown and a chart.

    .venv/bin/python bench/run.py [--quick] [--only ingest,loader]

Each stage benchmark (bench/*_bench.py, python -m services.segmenter.bench) runs as its own
process against the same broker and writes its result; this collects them into
``bench/results/latest.json`` and ``bench/results/latest.md`` (the table the README shows) and,
when matplotlib is installed (``pip install -e '.[bench]'``), ``bench/results/latest.png``.
Ratios compare variants measured minutes apart on the same machine; absolute rates do not travel.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.harness import REPO, bench_broker

RESULTS = REPO / "bench" / "results"
README = REPO / "README.md"
# The README's copy of the latest table sits between these lines (a full run rewrites it).
TABLE_START, TABLE_END = "<!-- bench table: start -->", "<!-- bench table: end -->"


def stages(quick: bool) -> dict[str, list[str]]:
    """name -> command (without --json); sizes chosen so the whole run stays in minutes on 2 cores."""
    py = sys.executable
    return {
        "collector": [py, "bench/collector_bench.py", "--seconds", "3" if quick else "10"],
        "ingest": [py, "bench/ingest_bench.py", "--records", "5000" if quick else "20000"],
        "enricher": [py, "bench/enricher_bench.py", "--records", "3000" if quick else "20000"],
        "enricher state": [py, "bench/enricher_state_bench.py", "--persons"]
        + (["1000"] if quick else ["3000", "30000"]),  # 1M extrapolated from the marginal cost
        "segmenter core": [py, "-m", "services.segmenter.bench", "--facts", "5000" if quick else "50000"],
        "segmenter": [py, "bench/segmenter_bench.py", "--records", "2000" if quick else "10000"],
        "loader": [
            py,
            "bench/loader_bench.py",
            "--rows",
            "20000" if quick else "200000",
            "--default-lag-samples",  # two samples at the 60 s default window: one more minute
            "0" if quick else "2",
        ],
        "pipeline": [
            py,
            "bench/pipeline_bench.py",
            "--low-rate",
            "10" if quick else "20",
            "--rates",
            "20" if quick else "50,100,200",
            "--seconds",
            "10" if quick else "20",
        ],
    }


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "load_average_at_start": round(os.getloadavg()[0], 1),
        "python": platform.python_version(),
        "os": platform.system(),
    }


def run_stage(name: str, command: list[str], env: dict[str, str], out: Path) -> dict[str, Any]:
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    done = subprocess.run([*command, "--json", str(out)], env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        print("\n".join(tail), file=sys.stderr)
        return {"stage": name, "error": f"exit {done.returncode}", "log_tail": tail}
    result = json.loads(out.read_text())
    result["seconds"] = round(time.monotonic() - started)
    print(json.dumps(result["ratios"]), flush=True)
    return result


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Measured {report['date']} on {m['cpus']} CPUs ({m['cpu'] or 'unknown CPU'}), Python {m['python']}, "
        "one local KRaft broker and chDB, all variants in one run. Ratios are the result; rates are "
        "shown only to read them. Load average (1 min) from other work on the machine: "
        f"{m.get('load_average_at_start', '?')} at the start, "
        f"{m.get('load_average_at_end', '?')} at the end.",
        "",
        "| stage | ratio | value | rates (records/s) |",
        "|---|---|---:|---|",
    ]
    for result in report["stages"]:
        if "error" in result:
            lines.append(f"| {result['stage']} | failed: {result['error']} | | |")
            continue
        rates = ", ".join(f"{k} {v:,}" for k, v in result["rates"].items())
        if "latency_ms" in result:
            rates += "; latency ms " + ", ".join(f"{k} {v:,}" for k, v in result["latency_ms"].items())
        for i, (ratio, value) in enumerate(result["ratios"].items()):
            lines.append(
                f"| {result['stage'] if i == 0 else ''} | {ratio} | {value:.2f} | {rates if i == 0 else ''} |"
            )
        for name, value in result.get("bytes_per_person", {}).items():
            lines.append(f"| | {name} bytes per person | {value:,} | |")
    return "\n".join(lines) + "\n"


def update_readme(table: str, readme: Path = README) -> bool:
    """Put ``table`` between the README's markers; False if the markers are missing."""
    text = readme.read_text()
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        return False
    readme.write_text(text[: start + len(TABLE_START)] + "\n" + table + text[end:])
    return True


def chart(report: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels, values = [], []
    for result in report["stages"]:
        for ratio, value in result.get("ratios", {}).items():
            labels.append(f"{result['stage']}: {ratio}")
            values.append(value)
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(labels) + 1.5))
    ax.barh(labels[::-1], values[::-1], color="#4a7ab5")
    ax.axvline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("ratio (same run, same machine)")
    ax.set_title(f"tagstream benchmarks, {report['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a result")
    parser.add_argument("--only", help="comma-separated stage names")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    selected = stages(args.quick)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        selected = {name: cmd for name, cmd in selected.items() if name in wanted}
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "quick": args.quick,
        "stages": [],
    }
    with bench_broker() as (base, workdir):
        env = {**os.environ, "TAGSTREAM_KAFKA_BOOTSTRAP": base.bootstrap_servers, "PYTHONPATH": str(REPO)}
        for name, command in selected.items():
            out = workdir / f"{name.replace(' ', '-')}.json"
            report["stages"].append(run_stage(name, command, env, out))
    report["machine"]["load_average_at_end"] = round(os.getloadavg()[0], 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "latest.md").write_text(markdown(report))
    drew = chart(report, args.out / "latest.png")
    print(markdown(report))
    if not args.quick and not args.only and args.out == RESULTS and update_readme(markdown(report)):
        print("updated the table in README.md (commit it with bench/results/)")
    print(
        f"wrote {args.out / 'latest.json'}, latest.md"
        + (", latest.png" if drew else " (no matplotlib: no chart)")
    )
    return 1 if any("error" in r for r in report["stages"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
