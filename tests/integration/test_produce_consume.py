"""JSON lines -> `tagstream produce` -> real Kafka -> `tagstream consume` -> the same lines."""

import pytest

from services.common.topics import ALL_TOPICS
from tests.helpers import DATA, tagstream

TOPIC_FOR_TYPE = {spec.record_type: spec.name for spec in ALL_TOPICS}


@pytest.mark.integration
@pytest.mark.parametrize("path", sorted((DATA / "records").glob("*.jsonl")), ids=lambda p: p.stem)
def test_every_schema_round_trips_unchanged(path, env):
    """A file produced and consumed again comes back byte-identical (order within a key kept)."""
    topic = TOPIC_FOR_TYPE[path.stem]
    lines = path.read_text().splitlines()
    produced = tagstream("produce", "--topic", topic, str(path), env=env)
    assert produced.returncode == 0, produced.stderr
    assert f"produced {len(lines)}" in produced.stderr
    consumed = tagstream("consume", "--topic", topic, "--from-beginning", "--max", str(len(lines)), env=env)
    assert consumed.returncode == 0, consumed.stderr
    assert sorted(consumed.stdout.splitlines()) == sorted(lines)


@pytest.mark.integration
def test_a_bad_line_names_itself_and_nothing_is_produced(env, tmp_path):
    """One invalid line stops the whole file: exit 1, the line number and field, no records."""
    good = (DATA / "records" / "event.jsonl").read_text().splitlines()
    bad_file = tmp_path / "mixed.jsonl"
    bad_file.write_text(
        "\n".join([good[0], '{"message_id":"x","event_time":"soon","name":"y"}', good[1]]) + "\n"
    )
    result = tagstream("produce", "--topic", "events", str(bad_file), env=env)
    assert result.returncode == 1
    assert f"{bad_file}:2: event_time" in result.stderr
    assert "nothing was produced" in result.stderr
    consumed = tagstream("consume", "--topic", "events", "--from-beginning", "--timeout", "2", env=env)
    assert consumed.stdout == ""


@pytest.mark.integration
def test_skip_invalid_produces_the_valid_lines(env, tmp_path):
    """--skip-invalid produces every valid line and reports each skipped one by number."""
    good = (DATA / "records" / "tag_hit.jsonl").read_text().splitlines()
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join([good[0], "not json", good[1]]) + "\n")
    result = tagstream("produce", "--topic", "tags", "--skip-invalid", str(mixed), env=env)
    assert result.returncode == 0, result.stderr
    assert f"skipped {mixed}:2: not JSON" in result.stderr
    consumed = tagstream("consume", "--topic", "tags", "--from-beginning", "--max", "2", env=env)
    assert sorted(consumed.stdout.splitlines()) == sorted(good)


@pytest.mark.integration
def test_unknown_topic_is_a_clear_error(env, tmp_path):
    """Producing to a topic that is not declared names the known topics."""
    f = tmp_path / "x.jsonl"
    f.write_text("{}\n")
    result = tagstream("produce", "--topic", "nope", str(f), env=env)
    assert result.returncode == 1
    assert "unknown topic 'nope'" in result.stderr and "events" in result.stderr
