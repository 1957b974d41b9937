"""Benchmark the streaming core: facts/s with 10, 100 and 1,000 segments in one run, and state size.

``python -m services.segmenter.bench [--facts N] [--persons N]``. Segment i is about event i
(two windows, a count and a property filter) and attribute i, as a marketing team's segments
would be. Two workloads, each replayed unchanged for 10, 100 and 1,000 segments: facts about the
first 10 segments' events only (the index's promise: defined-but-untouched segments cost nothing),
and facts over 1,000 event names (more segments also means more facts concern some segment).
Reported: facts per CPU second, the ratio to the 10-segment rate, the share of facts some segment reads and
the ratio of their rate (the cost per event that does segment work: in the Zipf workload 10
segments read ~40% of the facts, 1,000 read all of them, so the plain rate must drop; see
docs/segments.md, "Speed"), evaluations per fact read (timers included) and serialised per-person
state size. Ratios are what to compare; absolute rates depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from services.segmenter.definitions import Segment, parse
from services.segmenter.engine import Engine
from services.segmenter.facts import Fact
from services.segmenter.index import Index

DAY = 86_400_000
NOW = 1_795_132_800_000
CATALOGUE = 1000


def segments(n: int) -> dict[str, Segment]:
    docs = []
    for i in range(n):
        condition = {
            "any": [
                {"event": f"event-{i}", "within": "30d", "at_least": 3},
                {"all": [
                    {"event": f"event-{i}", "within": "7d", "where": [{"property": "value", "gt": 50}]},
                    {"attribute": f"attr-{i}", "equals": "yes"},
                ]},
            ]
        }  # fmt: skip
        docs.append({"id": f"segment-{i:04d}", "condition": condition})
    return {s.id: s for s in parse({"segments": docs})}


def stream(count: int, persons: int, catalogue: int, seed: int = 1) -> list[tuple[Fact, int]]:
    """Facts over ``catalogue`` names drawn Zipf-like (rank r with weight 1/r)."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(catalogue)]
    names = rng.choices(range(catalogue), weights=weights, k=count)
    facts = []
    for k, i in enumerate(names):
        t = NOW - 60 * DAY + k * (60 * DAY // count)
        person = f"p{rng.randrange(persons)}"
        if rng.random() < 0.1:
            fact = Fact(person, t, "attribute", f"attr-{i}", value=rng.choice(["yes", "no"]))
        else:
            fact = Fact(person, t, "event", f"event-{i}", properties={"value": rng.randint(0, 100)})
        facts.append((fact, t + rng.randint(0, 60_000)))
    facts.sort(key=lambda pair: pair[1])
    return facts


def run(n: int, facts: list[tuple[Fact, int]], repeats: int = 3) -> tuple[float, Engine]:
    """The best of ``repeats`` rates in this process's CPU time: the core is single-threaded, and on
    a shared machine wall time mostly measures the other processes (it read 3x CPU time here)."""
    definitions = segments(n)
    best = 0.0
    for _ in range(repeats):
        engine = Engine(Index.build(definitions))
        started = time.process_time()
        for fact, at in facts:
            engine.on_fact(fact, at)
        best = max(best, len(facts) / (time.process_time() - started))
    return best, engine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=50_000)
    parser.add_argument("--persons", type=int, default=2_000)
    parser.add_argument("--json", type=Path, help="also write the result here (bench/run.py)")
    args = parser.parse_args()
    result: dict[str, Any] = {"stage": "segmenter core", "facts": args.facts, "rates": {}, "ratios": {}}
    workloads = {
        # Every fact is about one of the first 10 segments' events: what the index promises is that
        # the 990 other segments cost nothing.
        "same facts, more segments defined": stream(args.facts, args.persons, 10),
        # Facts over 1,000 event names: more segments also means more facts are about some segment.
        f"Zipf over {CATALOGUE} names": stream(args.facts, args.persons, CATALOGUE),
    }
    for title, facts in workloads.items():
        print(f"{title} ({len(facts):,} facts, {args.persons:,} persons)")
        base = read_base = None
        for n in (10, 100, 1000):
            rate, engine = run(n, facts)
            # Facts some segment reads: the work the index cannot skip. Their rate is the cost per
            # event that does segment work, the comparison the factor-2 promise is about.
            read = sum(1 for fact, _ in facts if engine.index.segments_for(fact)) / len(facts)
            base, read_base = base or rate, read_base or rate * read
            sizes = [len(state.to_bytes()) for state in engine.states.values()]
            label = "same facts" if title.startswith("same") else "zipf"
            result["rates"][f"{label}, {n} segments"] = round(rate)
            result["ratios"][f"{label}, {n}/10 segments"] = round(rate / base, 3)
            result["ratios"][f"{label}, {n}/10 segments, facts a segment reads"] = round(
                rate * read / read_base, 3
            )
            result.setdefault("state_bytes_per_person_median", {})[f"{label}, {n}"] = statistics.median(sizes)
            print(
                f"{n:>6} segments: {rate:>8,.0f} facts/s  ratio to 10 segments {rate / base:.2f}  "
                f"read by a segment {read:.0%} (ratio of those/s {rate * read / read_base:.2f})  "
                f"evaluations/fact read {engine.evaluations / (read * len(facts)):.2f}  "
                f"state bytes/person median {statistics.median(sizes):.0f} max {max(sizes)}"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
