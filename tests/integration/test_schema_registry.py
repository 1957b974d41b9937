"""Confluent framing against a real registry (local Apicurio): produce -> Kafka -> consume.

With ``TAGSTREAM_SCHEMA_REGISTRY_URL`` set, values on the topic are ``00`` + schema id + Avro body
and the schema lives in the registry under ``<topic>-value``; without it, single-object encoding.
"""

from __future__ import annotations

import io
import json
import struct

import httpx
import pytest
from confluent_kafka import TopicPartition
from fastavro import schemaless_writer

from services.common.jsonform import JsonForm
from services.common.kafka import make_producer, make_reader
from services.common.schemas import default_catalogue
from services.common.serde import Serde, SerdeError
from services.common.settings import Settings
from services.common.topics import ALL_TOPICS, spec_for, topic_name
from tests.conftest import settings_env
from tests.helpers import DATA, tagstream, wait_until

TOPIC_FOR_TYPE: dict[str, str] = {}
for _spec in ALL_TOPICS:
    TOPIC_FOR_TYPE.setdefault(_spec.record_type, _spec.name)  # the first (raw) topic of each type


def raw_values(settings: Settings, topic: str, count: int) -> list[bytes]:
    """The first ``count`` values of ``topic`` exactly as stored in Kafka."""
    name = topic_name(spec_for(topic, settings), settings)
    reader = make_reader(settings)
    values: list[bytes] = []
    try:
        partitions = reader.list_topics(name, timeout=10).topics[name].partitions
        reader.assign([TopicPartition(name, p, 0) for p in partitions])

        def collected() -> bool:
            values.extend(m.value() for m in reader.consume(100, timeout=0.2) if not m.error())
            return len(values) >= count

        wait_until(collected, timeout=30, interval=0, what=f"{count} records on {name}")
    finally:
        reader.close()
    return values


def latest_schema_id(registry_url: str, subject: str) -> int:
    response = httpx.get(f"{registry_url}/subjects/{subject}/versions/latest", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["id"]


@pytest.mark.integration
@pytest.mark.parametrize("path", sorted((DATA / "records").glob("*.jsonl")), ids=lambda p: p.stem)
def test_every_schema_round_trips_in_confluent_framing(path, registry_settings):
    """With a registry set, a file comes back unchanged and every value carries the registry's id."""
    env = settings_env(registry_settings)
    topic = TOPIC_FOR_TYPE[path.stem]
    lines = path.read_text().splitlines()
    produced = tagstream("produce", "--topic", topic, str(path), env=env)
    assert produced.returncode == 0, produced.stderr
    consumed = tagstream("consume", "--topic", topic, "--from-beginning", "--max", str(len(lines)), env=env)
    assert consumed.returncode == 0, consumed.stderr
    assert sorted(consumed.stdout.splitlines()) == sorted(lines)

    subject = f"{topic_name(spec_for(topic, registry_settings), registry_settings)}-value"
    schema_id = latest_schema_id(registry_settings.schema_registry_url, subject)
    for value in raw_values(registry_settings, topic, len(lines)):
        assert value[:1] == b"\x00"
        assert struct.unpack(">I", value[1:5])[0] == schema_id


@pytest.mark.integration
def test_the_registry_keeps_logical_types_and_defaults(schema_registry_url):
    """The registered schema is the full .avsc, so other Confluent readers see timestamps and defaults."""
    line = json.loads((DATA / "records" / "tag_hit.jsonl").read_text().splitlines()[0])
    Serde(registry_url=schema_registry_url).encode(
        "tag_hit", JsonForm().from_json("tag_hit", line), topic="logical-types"
    )
    response = httpx.get(f"{schema_registry_url}/subjects/logical-types-value/versions/latest", timeout=10)
    fields = {f["name"]: f for f in json.loads(response.json()["schema"])["fields"]}
    assert fields["event_time"]["type"] == {"type": "long", "logicalType": "timestamp-millis"}
    assert fields["backfill"]["default"] is False


@pytest.mark.integration
def test_a_consumer_without_the_registry_url_names_the_problem(registry_settings, settings):
    """Confluent-framed records read without TAGSTREAM_SCHEMA_REGISTRY_URL give a clear error per record."""
    path = DATA / "records" / "event.jsonl"
    produced = tagstream("produce", "--topic", "events", str(path), env=settings_env(registry_settings))
    assert produced.returncode == 0, produced.stderr
    count = len(path.read_text().splitlines())
    consumed = tagstream(
        "consume", "--topic", "events", "--from-beginning", "--max", str(count), env=settings_env(settings)
    )
    assert consumed.stdout == ""
    errors = [line for line in consumed.stderr.splitlines() if line.startswith("undecodable record:")]
    assert len(errors) == count
    assert "Confluent-framed record (schema id" in errors[0]
    assert "TAGSTREAM_SCHEMA_REGISTRY_URL is not set" in errors[0]


@pytest.mark.integration
def test_a_mixed_topic_decodes_both_framings(registry_settings, settings):
    """Single-object records written before the registry was configured still decode after it."""
    older = (DATA / "records" / "location.jsonl").read_text().splitlines()
    newer = [json.dumps({**json.loads(line), "message_id": f"{i}-registry"}) for i, line in enumerate(older)]
    newer_file = registry_settings.data_dir / "newer.jsonl"
    newer_file.parent.mkdir(parents=True, exist_ok=True)
    newer_file.write_text("\n".join(newer) + "\n")

    first = tagstream(
        "produce",
        "--topic",
        "locations",
        str(DATA / "records" / "location.jsonl"),
        env=settings_env(settings),
    )
    assert first.returncode == 0, first.stderr
    second = tagstream(
        "produce", "--topic", "locations", str(newer_file), env=settings_env(registry_settings)
    )
    assert second.returncode == 0, second.stderr

    total = len(older) + len(newer)
    framings = {value[:1] for value in raw_values(registry_settings, "locations", total)}
    assert framings == {b"\xc3", b"\x00"}
    consumed = tagstream(
        "consume",
        "--topic",
        "locations",
        "--from-beginning",
        "--max",
        str(total),
        env=settings_env(registry_settings),
    )
    assert consumed.returncode == 0, consumed.stderr
    ids = sorted(json.loads(line)["message_id"] for line in consumed.stdout.splitlines())
    assert ids == sorted(
        [json.loads(line)["message_id"] for line in older] + [json.loads(n)["message_id"] for n in newer]
    )


@pytest.mark.integration
def test_an_older_producer_under_backward_compatibility(registry_settings):
    """A v1 writer registered under BACKWARD: today's schema is accepted and v1 records read with defaults."""
    url = registry_settings.schema_registry_url
    name = topic_name(spec_for("tags", registry_settings), registry_settings)
    subject = f"{name}-value"
    assert httpx.put(f"{url}/config/{subject}", json={"compatibility": "BACKWARD"}).status_code == 200
    v1 = next(v for v in default_catalogue().versions("tag_hit") if not v.current)
    registered = httpx.post(
        f"{url}/subjects/{subject}/versions", json={"schema": json.dumps(v1.raw), "schemaType": "AVRO"}
    )
    assert registered.status_code == 200, registered.text
    v1_id = registered.json()["id"]

    # An older producer writes one record with the v1 schema and the registry's id.
    line = json.loads((DATA / "records" / "tag_hit.jsonl").read_text().splitlines()[0])
    current = JsonForm().from_json("tag_hit", line)
    old_record = {k: v for k, v in current.items() if k not in ("app_id", "backfill")}
    old_record["message_id"] = "written-by-v1"
    body = io.BytesIO()
    schemaless_writer(body, v1.parsed, old_record)
    producer = make_producer(registry_settings)
    producer.produce(name, value=b"\x00" + struct.pack(">I", v1_id) + body.getvalue())
    assert producer.flush(30) == 0

    # Today's producer registers the current version next to it (compatible: new fields have defaults).
    env = settings_env(registry_settings)
    produced = tagstream("produce", "--topic", "tags", str(DATA / "records" / "tag_hit.jsonl"), env=env)
    assert produced.returncode == 0, produced.stderr
    versions = httpx.get(f"{url}/subjects/{subject}/versions").json()
    assert len(versions) == 2

    total = 1 + len((DATA / "records" / "tag_hit.jsonl").read_text().splitlines())
    consumed = tagstream("consume", "--topic", "tags", "--from-beginning", "--max", str(total), env=env)
    assert consumed.returncode == 0, consumed.stderr
    by_id = {r["message_id"]: r for r in map(json.loads, consumed.stdout.splitlines())}
    assert len(by_id) == total
    old = by_id["written-by-v1"]
    assert old["app_id"] is None and old["backfill"] is False
    assert old["event_time"] == line["event_time"]


@pytest.mark.integration
def test_an_unknown_schema_id_names_the_registry(schema_registry_url):
    """A Confluent header whose id the registry does not know is a SerdeError saying so."""
    with pytest.raises(SerdeError, match=f"schema id 999999 is not in registry {schema_registry_url}"):
        Serde(registry_url=schema_registry_url).decode(b"\x00" + struct.pack(">I", 999999) + b"\x02")


@pytest.mark.integration
def test_an_unreachable_registry_fails_produce_by_name(settings):
    """A registry URL nobody answers on: produce exits 1, names the registry, and produces nothing."""
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"
    env = settings_env(settings.model_copy(update={"schema_registry_url": url}))
    result = tagstream("produce", "--topic", "events", str(DATA / "records" / "event.jsonl"), env=env)
    assert result.returncode == 1
    assert f"schema registry {url} did not register" in result.stderr
    assert "nothing was produced" in result.stderr
