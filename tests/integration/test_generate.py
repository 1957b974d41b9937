"""`tagstream generate` writes produce-able files and produces the same stream to Kafka."""

import json

import pytest

from tests.helpers import tagstream


@pytest.mark.integration
def test_generated_files_produce_and_stream_matches(env, tmp_path):
    """Files from --out are accepted by `produce`; --produce puts every record on its raw topic."""
    args = ["generate", "--persons", "5", "--seed", "4", "--now", "2026-11-22T00:00:00Z"]
    written = tagstream(*args, "--out", str(tmp_path / "gen"), env=env)
    assert written.returncode == 0, written.stderr
    summary = json.loads(written.stdout)
    assert json.loads((tmp_path / "gen" / "manifest.json").read_text()) == summary

    produced = tagstream(*args, "--produce", env=env)
    assert produced.returncode == 0, produced.stderr
    assert json.loads(produced.stdout) == summary
    for topic, count in summary["per_topic"].items():
        undecodable = summary["expected_dead_letters"].get("undecodable", 0) if topic == "events" else 0
        consumed = tagstream("consume", "--topic", topic, "--from-beginning", "--max", str(count), env=env)
        assert len(consumed.stdout.splitlines()) == count - undecodable, topic
        lines = (tmp_path / "gen" / f"{topic}.jsonl").read_text().splitlines()
        assert sorted(consumed.stdout.splitlines()) == sorted(lines)
