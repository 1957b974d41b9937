"""Run the HTTP collector in-process (uvicorn in a thread, free port) and read what it produced."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from services.common.kafka import make_reader
from services.common.serde import Serde
from services.common.settings import Settings
from services.common.topics import TopicSpec, topic_name
from services.ingest.collector.main import build_server
from services.ingest.collector.settings import CollectorSettings
from tests.conftest import free_port
from tests.helpers import wait_until

WRITE_KEY = "wk_test"
SECRET = "test-tracking-secret"


def collector_settings(settings: Settings, **overrides: Any) -> CollectorSettings:
    values: dict[str, Any] = {
        **settings.model_dump(),
        "collector_port": free_port(),
        "collector_write_keys": f"{WRITE_KEY}=web-sdk,wk_other=backend",
        "tracking_secret": SECRET,
        **overrides,
    }
    return CollectorSettings(**values)


@contextmanager
def running_collector(settings: CollectorSettings, wait_ready: bool = True) -> Iterator[str]:
    """Yield the base URL of a collector serving in a thread; stop it (graceful) afterwards."""
    server = build_server(settings)
    thread = threading.Thread(target=server.run, name="collector-under-test", daemon=True)
    thread.start()
    base = f"http://{settings.collector_host}:{settings.collector_port}"

    def answers(path: str) -> bool:
        try:
            return httpx.get(base + path, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(lambda: server.started, timeout=30, what="collector to listen")
        if wait_ready:
            wait_until(lambda: answers("/readyz"), timeout=30, what="collector /readyz")
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def read_records(
    settings: Settings,
    spec: TopicSpec,
    count: int = 0,
    timeout: float = 90,  # a deadline, generous for a loaded 2-core CI machine
    until: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Records of ``spec``'s topic, decoded: the first ``count``, or until ``until(records)`` holds."""
    serde = Serde(registry_url=settings.schema_registry_url)
    consumer = make_reader(settings)
    consumer.subscribe([topic_name(spec, settings)])
    records: list[dict[str, Any]] = []
    try:

        def collected() -> bool:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                records.append(serde.decode(message.value())[1])
            return until(records) if until else len(records) >= count

        wait_until(collected, timeout=timeout, interval=0, what=f"records on {spec.name}")
    finally:
        consumer.close()
    return records
