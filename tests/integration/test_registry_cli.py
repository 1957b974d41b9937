"""`tagstream registry start|stop|status` run a registry of the test's own (not the session's)."""

import os
import socket

import httpx
import pytest

from tests.conftest import free_port
from tests.helpers import tagstream


def registry_env(tmp_path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGSTREAM_")}
    env.update(TAGSTREAM_DATA_DIR=str(tmp_path / "data"), TAGSTREAM_REGISTRY_PORT=str(port))
    return env


@pytest.mark.integration
def test_start_is_idempotent_and_stop_stops(tmp_path):
    """start answers on the Confluent API, a second start is a no-op, stop ends it and status says so."""
    port = free_port()
    env = registry_env(tmp_path, port)
    url = f"http://127.0.0.1:{port}/apis/ccompat/v7"
    try:
        first = tagstream("registry", "start", env=env)
        assert first.returncode == 0, first.stderr
        assert f"schema registry started: {url}" in first.stderr
        assert httpx.get(f"{url}/subjects", timeout=5).json() == []
        again = tagstream("registry", "start", env=env)
        assert "already running" in again.stderr
        assert tagstream("registry", "status", env=env).stdout.startswith(f"running: {url}")
    finally:
        stopped = tagstream("registry", "stop", env=env)
    assert "schema registry stopped" in stopped.stderr
    status = tagstream("registry", "status", env=env)
    assert status.returncode == 1 and status.stdout.startswith("stopped")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/subjects", timeout=5)


@pytest.mark.integration
def test_a_failed_start_shows_the_registry_log(tmp_path):
    """A taken port makes start fail with exit 1 and the tail of the registry's log."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = registry_env(tmp_path, taken.getsockname()[1])
        try:
            result = tagstream("registry", "start", env=env, timeout=180)
        finally:
            tagstream("registry", "stop", env=env)
    assert result.returncode == 1
    assert "Apicurio Registry exited during start-up" in result.stderr
    assert "registry.log" in result.stderr and "Log tail" in result.stderr


@pytest.mark.integration
def test_an_external_registry_url_starts_nothing(tmp_path):
    """With TAGSTREAM_SCHEMA_REGISTRY_URL pointing elsewhere, `registry start` says so and starts nothing."""
    env = {
        **registry_env(tmp_path, free_port()),
        "TAGSTREAM_SCHEMA_REGISTRY_URL": "http://registry.example:8081",
    }
    result = tagstream("registry", "start", env=env)
    assert result.returncode == 0
    assert (
        "TAGSTREAM_SCHEMA_REGISTRY_URL is set (http://registry.example:8081): nothing to start"
        in result.stderr
    )
    assert tagstream("registry", "status", env=env).returncode == 1
