"""``tagstream demo``: feed a synthetic population through the running stack and show results.

Steps, each announced: generate and produce a seeded population to the raw topics; send a few
calls through the HTTP collector the way an SDK would; wait (with progress and a deadline) until
the loader has every valid record in ClickHouse; print what arrived, what was refused and why,
and a few of the reports analysts use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from rich.console import Console

from services.cli.progress import progress_bar
from services.common.settings import Settings
from services.generator.output import produce_items
from services.generator.population import GeneratorConfig, PopulationGenerator

TABLE_FOR_TOPIC = {
    "tags": "tags",
    "events": "events",
    "locations": "locations",
    "delivery-receipts": "message_events",
    "profile-updates": "profile_updates",
}


def _collector_calls(settings: Settings, say: Callable[[str], object]) -> int:
    """A Segment-style track and a tag through the collector, if it runs with a write key."""
    from services.ingest.collector.settings import CollectorSettings, load_write_keys

    collector = CollectorSettings()
    keys = load_write_keys(collector)
    if not keys:
        say("collector: no write key configured (TAGSTREAM_COLLECTOR_WRITE_KEYS), skipping HTTP calls")
        return 0
    key = next(iter(keys))
    base = f"http://{collector.collector_host}:{collector.collector_port}"
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    calls = [
        (
            "/v1/track",
            {
                "event": "Demo Viewed",
                "anonymousId": "demo-visitor",
                "messageId": f"demo-t-{now}",
                "timestamp": now,
                "properties": {"page": "/offers"},
            },
        ),
        (
            "/v1/tag",
            {
                "name": "journeyform_destination",
                "value": "New York",
                "installId": "demo-device",
                "messageId": f"demo-g-{now}",
                "timestamp": now,
            },
        ),
    ]
    sent = 0
    for path, body in calls:
        try:
            response = httpx.post(base + path, json=body, auth=(key, ""), timeout=10)
        except httpx.HTTPError as exc:
            say(f"collector: {path} failed: {exc}")
            continue
        say(f"collector: POST {path} -> {response.status_code}")
        sent += response.status_code == 200
    return sent


def _analytics(settings: Settings, deadline: float) -> Any:
    """Queries go through the loader's API in embedded mode: the loader owns the chDB data dir, and
    a second process opening it would fail on its lock. A loader still starting has no API yet."""
    from services.loader.analytics import Analytics, running_loader_url

    while not settings.clickhouse_url and running_loader_url(settings) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("the loader's analytics API did not come up (tagstream stack status)")
        time.sleep(1.0)  # polling for a human watching; not a readiness check
    return Analytics(settings)


def _loaded(analytics: Any) -> dict[str, int]:
    counts = {}
    for topic, table in TABLE_FOR_TOPIC.items():
        counts[topic] = int(analytics.query(f"SELECT count() FROM {table}").rows[0][0])
    return counts


def _wait_caught_up(settings: Settings, console: Console, deadline: float) -> None:
    """Until every service group has processed all it was given, twice in a row: a segment change
    or a message is produced only after its input is processed, so one pass can reveal new work."""
    from services.common.lag import pipeline_lag

    settled = 0
    with progress_bar(console, "   lag") as progress:
        task = progress.add_task("lag", total=None)
        while settled < 2:
            lags = pipeline_lag(settings)
            behind = sum(lags.values())
            progress.update(task, description=f"   records behind: {behind}")
            settled = settled + 1 if behind == 0 else 0
            if time.monotonic() > deadline:
                raise TimeoutError(f"services still behind: {lags}")
            time.sleep(1.0)  # polling for a human watching; not a readiness check


def _show_segments_and_messages(analytics: Any, say: Callable[[str], object]) -> None:
    from services.loader.membership import sizes_sql

    say("6. segment sizes (tagstream segments list) and triggered messages")
    for segment_id, members in analytics.query(sizes_sql()).rows:
        say(f"   {segment_id:24} {members:6d} members")
    rows = analytics.query(
        "SELECT campaign_id, channel, count() FROM outbound_messages "
        "GROUP BY campaign_id, channel ORDER BY campaign_id, channel"
    ).rows
    if not rows:
        say("   no messages yet (campaigns: TAGSTREAM_TRIGGER_CAMPAIGNS_FILE)")
    for campaign_id, channel, n in rows:
        say(f"   {campaign_id:24} {channel:8} {n:6d} messages")


def run_demo(
    settings: Settings, console: Console, persons: int = 200, seed: int = 7, timeout_s: float = 600
) -> None:
    say = console.print
    now_ms = int(time.time() * 1000)
    items = PopulationGenerator(
        GeneratorConfig(persons=persons, seed=seed, now_ms=now_ms, days=20)
    ).generate()
    say(
        f"1. generated {len(items)} records for {persons} persons (seed {seed}), "
        "including late, duplicated and bad ones"
    )
    with progress_bar(console, "   producing") as progress:
        task = progress.add_task("produce", total=len(items))
        summary = produce_items(settings, items, on_delivered=lambda n: progress.advance(task, n))
    say(
        f"   expected after ingest: {summary['valid_unique']} valid records, "
        f"{sum(summary['expected_dead_letters'].values())} dead letters, "
        f"{summary['duplicates']} duplicates dropped"
    )

    say("2. HTTP collector")
    _collector_calls(settings, say)

    say("3. waiting for the loader to have every valid record in ClickHouse")
    deadline = time.monotonic() + timeout_s
    analytics = _analytics(settings, deadline)
    expected = summary["valid_unique_per_topic"]
    total = sum(expected.values())
    with progress_bar(console, "   loaded") as progress:
        task = progress.add_task("load", total=total)
        while True:
            counts = _loaded(analytics)
            progress.update(task, completed=sum(min(counts[t], expected.get(t, 0)) for t in counts))
            if all(counts[t] >= expected.get(t, 0) for t in counts):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"not everything loaded after {timeout_s:.0f}s: {counts} of {expected}")
            time.sleep(1.0)  # polling ClickHouse for a human watching; not a readiness check
    for topic, table in TABLE_FOR_TOPIC.items():
        say(
            f"   {table:16} {counts[topic]:6d} rows (generated: {expected.get(topic, 0)} valid, "
            "plus collector calls)"
        )

    say("4. dead letters by reason (tagstream dlq inspect --summary)")
    for reason, n in analytics.query(
        "SELECT reason, count() FROM dead_letters GROUP BY reason ORDER BY reason"
    ).rows:
        say(f"   {reason:20} {n}")

    say("5. waiting for every service to catch up (consumer-group lag, tagstream stack status)")
    _wait_caught_up(settings, console, deadline)
    _show_segments_and_messages(analytics, say)

    say("7. reports (tagstream report NAME)")
    for name in ("tags", "campaigns", "locations"):
        result = analytics.report(name)
        say(f"   {name}: {', '.join(result.columns)}")
        for row in result.rows[:5]:
            say("     " + " | ".join("" if v is None else str(v) for v in row))
