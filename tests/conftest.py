"""Fixtures: a real Kafka broker for the session, isolated topics per test, chDB in a temp dir,
and (only for the tests that ask) a real schema registry.

The broker is, in order of preference: ``TAGSTREAM_KAFKA_BOOTSTRAP`` (an existing cluster);
testcontainers' Kafka when ``TAGSTREAM_TEST_DOCKER=1`` and Docker answers; otherwise the local
KRaft broker from Maven-fetched jars on free ports in a temp dir (the default, and CI's).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.broker import LocalBroker
from services.common.kafka import ensure_topics
from services.common.registry_server import LocalRegistry
from services.common.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_broker_settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, kafka_port=free_port(), kafka_controller_port=free_port())


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("TAGSTREAM_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    if os.environ.get("TAGSTREAM_TEST_DOCKER") == "1":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    settings = local_broker_settings(tmp_path_factory.mktemp("kafka"))
    broker = LocalBroker(settings)
    broker.start()
    try:
        yield settings.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings for one test: the session broker, a unique topic prefix, a private data dir.

    Every declared topic exists (created empty) when the test starts.
    """
    s = Settings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{uuid.uuid4().hex[:10]}-", data_dir=tmp_path / "data"
    )
    ensure_topics(s)
    return s


def settings_env(s: Settings) -> dict[str, str]:
    """The environment that makes a subprocess (the CLI, a service) use these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGSTREAM_")}
    env.update(
        TAGSTREAM_KAFKA_BOOTSTRAP=s.bootstrap_servers,
        TAGSTREAM_TOPIC_PREFIX=s.topic_prefix,
        TAGSTREAM_DATA_DIR=str(s.data_dir),
        TAGSTREAM_CACHE_DIR=str(s.cache_dir),
    )
    if s.schema_registry_url:
        env["TAGSTREAM_SCHEMA_REGISTRY_URL"] = s.schema_registry_url
    if s.clickhouse_url:
        env["TAGSTREAM_CLICKHOUSE_URL"] = s.clickhouse_url
    return env


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return settings_env(settings)


@pytest.fixture(scope="session")
def schema_registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Confluent-compatible registry (local Apicurio, in-memory, free port) for the session.

    Started on first use only, so test runs that need no registry never pay for it.
    """
    registry = LocalRegistry(
        Settings(data_dir=tmp_path_factory.mktemp("registry"), registry_port=free_port())
    )
    registry.start()
    try:
        yield registry.url
    finally:
        registry.stop()


@pytest.fixture
def registry_settings(settings: Settings, schema_registry_url: str) -> Settings:
    """The test's settings with Confluent framing on: TAGSTREAM_SCHEMA_REGISTRY_URL is set."""
    return settings.model_copy(update={"schema_registry_url": schema_registry_url})


@pytest.fixture
def chdb_dsn(tmp_path: Path) -> str:
    """A fresh on-disk chDB data dir. One process holds one chDB path at a time: close clients."""
    return f"chdb://{tmp_path / 'clickhouse'}"
