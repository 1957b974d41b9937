"""ingest records/s against bare confluent-kafka passthroughs of the same messages, same broker.

    .venv/bin/python bench/ingest_bench.py [--records 20000] [--batch-size 1000] [--rounds 1] [--json PATH]

Three variants read the same Avro tag hits from ``tags`` and write ``tags.valid``:
``passthrough`` (consume, produce, commit after delivery), ``passthrough-txn`` (the same inside
one Kafka transaction per batch, offsets included: the exactly-once cost alone) and ``ingest``
(decode, normalise, validate, deduplicate, encode, dedupe markers, one transaction per batch).
Reports records/s and, steadier on a shared machine, records per CPU-second of each variant's
process (its librdkafka threads included, the broker's work not). ``--batch-size`` is records per
consume and per transaction for all three (ingest's
``TAGSTREAM_INGEST_BATCH_SIZE``): it moves the exactly-once floor. Uses ``TAGSTREAM_KAFKA_BOOTSTRAP``
if set, else starts a local broker in a temp dir.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.harness import Keyed, Measured, Variant, bench_broker, measure, passthrough, write_result
from services.common.kafka import record_key
from services.common.serde import Serde
from services.common.topics import TAGS, VALID_TAGS


def tag_hits(prefix: str, n: int, devices: int) -> list[Keyed]:
    serde = Serde()
    now = int(time.time() * 1000) - 60_000
    out = []
    for i in range(n):
        record = {
            "message_id": f"{prefix}{i}",
            "event_time": now + i % 1000,
            "received_time": None,
            "source": "bench",
            "app_id": "bench",
            "backfill": False,
            "identity": {
                "install_id": f"dev-{i % devices}",
                "anonymous_id": None,
                "external_user_id": None,
                "email": None,
                "phone": None,
            },
            "context": {"platform": "ios", "app_version": "1.2.3"},
            "name": f"viewed_offer_{i % 20}",
            "value": str(i % 7) if i % 2 else None,
        }
        out.append((record_key(record), serde.encode("tag_hit", record)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1, help="measure every variant N times; medians")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    batch = args.batch_size
    ingest = Variant(
        "ingest",
        [sys.executable, "-m", "services.cli", "run", "ingest"],
        TAGS,
        VALID_TAGS,
        env={"TAGSTREAM_INGEST_BATCH_SIZE": str(batch)},
    )
    variants = [
        passthrough(TAGS, VALID_TAGS, batch_size=batch),
        passthrough(TAGS, VALID_TAGS, transactional=True, batch_size=batch),
        ingest,
    ]
    rounds: list[dict[str, Measured]] = []
    with bench_broker() as (base, workdir):
        for _ in range(args.rounds):
            measured: dict[str, Measured] = {}
            for variant in variants:
                warm = tag_hits("warm-", 200, args.devices)
                run = tag_hits("run-", args.records, args.devices)
                measured[variant.name] = measure(variant, base, workdir, warm, run)
            rounds.append(measured)
    # The median of each variant over the rounds: a noisy neighbour during one variant of one
    # round moves the ratios less.
    rates = {v.name: statistics.median(r[v.name].rate for r in rounds) for v in variants}
    # CPU per record, inverted so that like the rates higher is better: records per CPU-second.
    per_cpu = {v.name: 1e6 / statistics.median(r[v.name].cpu_us for r in rounds) for v in variants}
    write_result(
        args.json,
        {
            "stage": "ingest",
            "records": args.records,
            "batch_size": batch,
            "rates": {k: round(v) for k, v in rates.items()},
            "ratios": _ratios(rates),
            "records_per_cpu_second": {k: round(v) for k, v in per_cpu.items()},
            "cpu_ratios": _ratios(per_cpu),
            **(
                {"rounds": [_ratios({k: m.rate for k, m in r.items()}) for r in rounds]}
                if args.rounds > 1
                else {}
            ),
        },
    )


def _ratios(rates: dict[str, float]) -> dict[str, float]:
    return {
        "ingest/passthrough": round(rates["ingest"] / rates["passthrough"], 3),
        "ingest/passthrough-txn": round(rates["ingest"] / rates["passthrough-txn"], 3),
        "passthrough-txn/passthrough": round(rates["passthrough-txn"] / rates["passthrough"], 3),
    }


if __name__ == "__main__":
    main()
