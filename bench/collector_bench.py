"""Benchmark the HTTP collector: /v1/batch against a trivial route (/healthz) on the same server.

Starts a collector process (and, unless TAGSTREAM_KAFKA_BOOTSTRAP is set, a local broker in a
temp dir), then drives each route in turn with the same concurrency for the same duration and
prints requests/s, events/s, p50/p99 latency and the batch/trivial ratio. Absolute numbers
depend on the machine; compare ratios between runs.

    .venv/bin/python bench/collector_bench.py --seconds 10 --concurrency 32 --batch-size 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.common.broker import LocalBroker  # noqa: E402
from services.common.kafka import ensure_topics  # noqa: E402
from services.common.settings import Settings  # noqa: E402
from tests.conftest import free_port  # noqa: E402

WRITE_KEY = "wk_bench"


def batch_body(size: int) -> bytes:
    messages = [
        {
            "type": "track",
            "event": "Viewed Item",
            "userId": f"u-{i}",
            "messageId": str(uuid.uuid4()),
            "timestamp": "2026-11-22T12:00:00.000Z",
            "properties": {"sku": f"A{i}", "price": 9.99, "tags": ["x", "y"]},
            "context": {"app": {"version": "5.2.0"}, "os": {"name": "iOS", "version": "18.1"}},
        }
        for i in range(size)
    ]
    return json.dumps({"batch": messages, "sentAt": "2026-11-22T12:00:01.000Z"}).encode()


async def drive(base: str, method: str, path: str, body: bytes | None, seconds: float, concurrency: int):
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, auth=(WRITE_KEY, ""), limits=limits, timeout=30) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.request(method, path, content=body)
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "statuses": statuses,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the result here (bench/run.py)")
    args = parser.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        bootstrap = os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP")
        if not bootstrap:
            local = Settings(data_dir=Path(tmp), kafka_port=free_port(), kafka_controller_port=free_port())
            broker = LocalBroker(local)
            broker.start()
            stack.callback(broker.stop)
            bootstrap = local.bootstrap_servers
        settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:8]}-")
        ensure_topics(settings)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAGSTREAM_")} | {
            "TAGSTREAM_KAFKA_BOOTSTRAP": bootstrap,
            "TAGSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "TAGSTREAM_COLLECTOR_PORT": str(port),
            "TAGSTREAM_COLLECTOR_WRITE_KEYS": f"{WRITE_KEY}=bench",
            "TAGSTREAM_COLLECTOR_RATE_PER_KEY": "1e9",
            "TAGSTREAM_COLLECTOR_BURST_PER_KEY": "1e9",
            "TAGSTREAM_LOG_LEVEL": "WARNING",
        }
        command = [sys.executable, "-m", "services.cli", "run", "collector"]
        server = subprocess.Popen(command, env=env, cwd=REPO)
        stack.callback(lambda: (server.terminate(), server.wait(60)))
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # readiness, with a deadline
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print("collector did not become ready", file=sys.stderr)
                return 1
            time.sleep(0.2)

        body = batch_body(args.batch_size)
        asyncio.run(drive(base, "GET", "/healthz", None, 1.0, args.concurrency))  # warm-up
        asyncio.run(drive(base, "POST", "/v1/batch", body, 1.0, args.concurrency))
        trivial = asyncio.run(drive(base, "GET", "/healthz", None, args.seconds, args.concurrency))
        batch = asyncio.run(drive(base, "POST", "/v1/batch", body, args.seconds, args.concurrency))

    for name, result in (("trivial GET /healthz", trivial), (f"POST /v1/batch x{args.batch_size}", batch)):
        print(
            f"{name:26} {result['rps']:9.1f} req/s  p50 {result['p50_ms']:7.2f} ms  "
            f"p99 {result['p99_ms']:7.2f} ms  statuses {result['statuses']}"
        )
    print(f"/v1/batch events/s: {batch['rps'] * args.batch_size:.0f}")
    print(f"ratio /v1/batch req/s : trivial req/s = {batch['rps'] / trivial['rps']:.3f}")
    print(f"ratio events/s : trivial req/s = {batch['rps'] * args.batch_size / trivial['rps']:.2f}")
    if args.json:
        result = {
            "stage": "collector",
            "batch_size": args.batch_size,
            "rates": {
                "trivial req/s": round(trivial["rps"]),
                "batch events/s": round(batch["rps"] * args.batch_size),
            },
            "ratios": {"batch req/s / trivial req/s": round(batch["rps"] / trivial["rps"], 3)},
            "latency_ms": {"batch p50": round(batch["p50_ms"], 1), "batch p99": round(batch["p99_ms"], 1)},
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
