"""`tagstream broker start|stop|status` and `topics ensure` against a broker of the test's own."""

import os
import socket

import pytest

from services.common.broker import LocalBroker
from tests.conftest import local_broker_settings, settings_env
from tests.helpers import DATA, tagstream


def broker_env(tmp_path):
    s = local_broker_settings(tmp_path / "data")
    env = settings_env(s)
    del env["TAGSTREAM_KAFKA_BOOTSTRAP"]  # the local broker, not the session's
    env["TAGSTREAM_KAFKA_PORT"] = str(s.kafka_port)
    env["TAGSTREAM_KAFKA_CONTROLLER_PORT"] = str(s.kafka_controller_port)
    return s, env


@pytest.mark.integration
def test_lifecycle_is_idempotent_and_a_restart_keeps_data(tmp_path):
    """start twice is a no-op; data produced before stop is consumable after the next start."""
    s, env = broker_env(tmp_path)
    try:
        first = tagstream("broker", "start", env=env)
        assert first.returncode == 0, first.stderr
        assert "started" in first.stderr
        again = tagstream("broker", "start", env=env)
        assert "already running" in again.stderr
        assert tagstream("broker", "status", env=env).stdout.startswith("running")
        assert tagstream("topics", "ensure", env=env).returncode == 0
        ensured = tagstream("topics", "ensure", env=env).stdout
        assert "created" not in ensured and "exists    events" in ensured
        produced = tagstream("produce", "--topic", "tags", str(DATA / "records" / "tag_hit.jsonl"), env=env)
        assert produced.returncode == 0, produced.stderr

        assert "stopped" in tagstream("broker", "stop", env=env).stderr
        status = tagstream("broker", "status", env=env)
        assert status.returncode == 1 and status.stdout.startswith("stopped")

        assert tagstream("broker", "start", env=env).returncode == 0
        consumed = tagstream(
            "consume", "--topic", "tags", "--from-beginning", "--max", "2", "--timeout", "20", env=env
        )
        expected = (DATA / "records" / "tag_hit.jsonl").read_text().splitlines()
        assert sorted(consumed.stdout.splitlines()) == sorted(expected)
    finally:
        LocalBroker(s).stop()


@pytest.mark.integration
def test_failed_start_shows_the_broker_log(tmp_path):
    """A broker that cannot start reports why, with the tail of its log, within the deadline."""
    s, env = broker_env(tmp_path)
    with socket.socket() as squatter:  # someone else already holds the client port
        squatter.bind(("127.0.0.1", s.kafka_port))
        squatter.listen()
        try:
            result = tagstream("broker", "start", env=env, timeout=180)
        finally:
            LocalBroker(s).stop()
    assert result.returncode == 1
    assert "Log tail" in result.stderr and "broker.log" in result.stderr
    assert "Address already in use" in result.stderr


def test_external_cluster_means_nothing_to_start(tmp_path):
    """With TAGSTREAM_KAFKA_BOOTSTRAP set, `broker start` says so and starts nothing."""
    env = {
        **os.environ,
        "TAGSTREAM_KAFKA_BOOTSTRAP": "kafka.example:9092",
        "TAGSTREAM_DATA_DIR": str(tmp_path),
    }
    result = tagstream("broker", "start", env=env)
    assert result.returncode == 0
    assert "nothing to start" in result.stderr
    assert not (tmp_path / "kafka").exists()
