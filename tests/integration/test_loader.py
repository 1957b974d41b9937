"""The loader as users run it (``tagstream run loader``), against the real broker and chDB.

Records are produced as Avro straight to the ``*.valid`` topics (what ingest writes); the
loader runs with a 1 s flush window; every check waits on a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from services.common.clickhouse import connect
from services.common.jsonform import JsonForm
from services.common.kafka import make_producer, record_key
from services.common.serde import Serde
from services.common.topics import (
    DEAD_LETTERS,
    VALID_DELIVERY_RECEIPTS,
    VALID_EVENTS,
    VALID_LOCATIONS,
    VALID_PROFILE_UPDATES,
    VALID_TAGS,
    TopicSpec,
    topic_name,
)
from tests.conftest import free_port
from tests.helpers import DATA, tagstream, wait_until

FIXTURES = {
    VALID_TAGS: "tag_hit",
    VALID_EVENTS: "event",
    VALID_LOCATIONS: "location",
    VALID_DELIVERY_RECEIPTS: "delivery_receipt",
    VALID_PROFILE_UPDATES: "profile_update",
    DEAD_LETTERS: "dead_letter",
}


class LoaderProcess:
    """``tagstream run loader`` in a subprocess; its analytics API is the way into chDB."""

    def __init__(self, env: dict[str, str], log: Path, **extra: str) -> None:
        self.port = free_port()
        self.env = {
            **env,
            "TAGSTREAM_LOADER_FLUSH_SECONDS": "1",
            "TAGSTREAM_LOADER_SOURCE": "valid",  # these tests produce ingest's output directly
            # a SIGKILLed loader's partitions return to the group after 6 s instead of 45 s
            "TAGSTREAM_LOADER_SESSION_TIMEOUT_MS": "6000",
            "TAGSTREAM_LOADER_PORT": str(self.port),
            **extra,
        }
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", "loader"],
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> LoaderProcess:
        def ready() -> bool:
            assert self.proc.poll() is None, "loader exited early"
            try:
                return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=90, what="loader ready")
        return self

    def query(self, sql: str, timeout: float = 30) -> list[list]:
        response = httpx.post(f"{self.url}/query", content=sql.encode(), timeout=timeout)
        assert response.status_code == 200, response.text
        return response.json()["rows"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def loaders(env, tmp_path):
    started: list[LoaderProcess] = []

    def start(**extra: str) -> LoaderProcess:
        process = LoaderProcess(env, tmp_path / "loader.log", **extra)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def produce(
    settings, spec: TopicSpec, values: list[tuple[bytes | None, bytes]], partition: int | None = None
):
    producer = make_producer(settings)
    errors: list = []
    for key, value in values:
        kwargs = {"partition": partition} if partition is not None else {}
        producer.produce(
            topic_name(spec, settings),
            value=value,
            key=key,
            on_delivery=lambda e, _m: e and errors.append(e),
            **kwargs,
        )
    assert producer.flush(30) == 0
    assert not errors


def fixture_records(record_type: str) -> list[dict]:
    form = JsonForm()
    lines = (DATA / "records" / f"{record_type}.jsonl").read_text().splitlines()
    return [form.from_json(record_type, json.loads(line)) for line in lines if line.strip()]


def encoded(serde: Serde, record_type: str, records: list[dict]) -> list[tuple[bytes | None, bytes]]:
    return [(record_key(r), serde.encode(record_type, r)) for r in records]


def count(loader: LoaderProcess, table: str) -> int:
    return loader.query(f"SELECT count() FROM {table}")[0][0]


@pytest.mark.integration
def test_known_input_lands_in_every_table_and_bad_records_become_dead_letters(settings, env, loaders):
    """Every *.valid record is one row with its fields; undecodable and ClickHouse-refused records
    become dead letters (and land in dead_letters) while the rest of their batch loads."""
    serde = Serde()
    expected = {}
    for spec, record_type in FIXTURES.items():
        records = fixture_records(record_type)
        produce(settings, spec, encoded(serde, record_type, records))
        expected[spec] = records
    impossible = dict(expected[VALID_LOCATIONS][0], message_id="loc-bad", latitude=123.0)
    produce(settings, VALID_LOCATIONS, encoded(serde, "location", [impossible]))
    produce(settings, VALID_TAGS, [(b"k", b"not avro at all")])

    loader = loaders().wait_ready()
    tables = {
        "tags": 2,
        "events": 3,
        "locations": 3,
        "message_events": 3,
        "profile_updates": 3,
        "dead_letters": 3,  # the fixture's own + the undecodable tag + the refused location
    }
    wait_until(
        lambda: all(count(loader, t) == n for t, n in tables.items()), timeout=60, what="every table loaded"
    )

    assert loader.query(
        "SELECT message_id, app_id, name, value, identity_key FROM tags ORDER BY message_id"
    ) == [
        ["tag-1", "web", "registration_complete", None, "install_id:dev-1"],
        ["tag-2", "ios", "journeyform_destination", "New York", "external_user_id:user-7"],
    ]
    events = loader.query(
        "SELECT message_id, kind, JSONExtractFloat(properties, 'revenue') FROM events ORDER BY 1"
    )
    assert events == [["ev-1", "purchase", 42.5], ["ev-2", "app_launch", 0.0], ["ev-3", "custom", 0.0]]
    assert loader.query("SELECT message_id, kind, region_id, region_kind FROM locations ORDER BY 1") == [
        ["loc-1", "gps", "", ""],
        ["loc-2", "enter", "store-dublin", "geofence"],
        ["loc-3", "exit", "f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:7", "ibeacon"],
    ]
    assert loader.query(
        "SELECT message_id, channel, status, campaign_id, send_id, link_id FROM message_events ORDER BY 1"
    ) == [
        ["rc-1", "email", "delivered", "black-friday", "send-1", ""],
        ["rc-2", "email", "link_clicked", "black-friday", "send-1", "cta"],
        ["rc-3", "sms", "undelivered", "outage-dublin", "send-2", ""],
    ]
    assert loader.query(
        "SELECT message_id, action, attribute_names, device_platform, push_enabled "
        "FROM profile_updates ORDER BY 1"
    ) == [
        ["pu-1", "personalize", ["first_name", "monthly_usage_gb", "signup_date", "dark_mode"], "ios", True],
        ["pu-2", "depersonalize", [], "", None],
        ["pu-3", "alias", [], "", None],
    ]
    assert loader.query("SELECT install_id, platform, app_version, push_enabled FROM devices FINAL") == [
        ["dev-1", "ios", "5.2.0", True]  # derived from pu-1, the only update carrying a device
    ]
    letters = loader.query(
        "SELECT if(startsWith(message_id, 'dlq-'), 'dlq-', message_id), service, step, reason, "
        "source_topic, position(message, 'latitude') > 0 FROM dead_letters ORDER BY service, reason"
    )
    # A refused record that decodes keeps its own message id; undecodable bytes get a dlq- id.
    assert letters == [
        ["dlq-", "ingest", "decode", "undecodable", "events", False],
        ["loc-bad", "loader", "insert", "clickhouse_rejected", topic_name(VALID_LOCATIONS, settings), True],
        ["dlq-", "loader", "decode", "undecodable", topic_name(VALID_TAGS, settings), False],
    ]
    # The refused row is the bad one: the good locations of the same batch loaded.
    assert loader.query("SELECT count() FROM locations WHERE message_id = 'loc-bad'") == [[0]]


@pytest.mark.integration
def test_sigkill_between_insert_and_commit_loses_nothing_and_duplicates_nothing(
    settings, env, loaders, tmp_path
):
    """Killed right after its first insert (offsets uncommitted), then restarted with more records
    waiting, the loader ends with every record exactly once; the CLI reads it in both modes."""
    serde = Serde()
    template = fixture_records("tag_hit")[0]
    first = [dict(template, message_id=f"k-{i}") for i in range(10)]
    produce(settings, VALID_TAGS, encoded(serde, "tag_hit", first), partition=0)

    killed = loaders(TAGSTREAM_LOADER_TEST_KILL_AFTER_INSERT="true")
    assert killed.proc.wait(90) == -signal.SIGKILL
    client = connect(settings.clickhouse_dsn)  # the dead loader's data dir is free now
    try:
        loaded_before_kill = client.query("SELECT count() FROM tags").result_rows[0][0]
    finally:
        client.close()
    assert loaded_before_kill > 0  # the insert landed; its offsets were never committed

    second = [dict(template, message_id=f"k-{i}") for i in range(10, 25)]
    produce(settings, VALID_TAGS, encoded(serde, "tag_hit", second), partition=0)
    loader = loaders().wait_ready()
    wait_until(lambda: count(loader, "tags") >= 25, timeout=60, what="all 25 tags loaded")
    assert loader.query("SELECT count(), uniqExact(message_id) FROM tags") == [[25, 25]]
    assert '"event": "replaying batches"' in (tmp_path / "loader.log").read_text()  # same range, same token

    # Embedded mode, loader running: the CLI goes through the loader's API.
    out = tagstream("report", "tags", "--format", "json", env=env)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["hits"] for line in out.stdout.splitlines()] == [25]
    refused = tagstream("query", "DROP TABLE tags", env=env)
    assert refused.returncode == 2
    assert "read-only: DROP statements are refused" in refused.stderr

    loader.stop()
    # Loader stopped: the CLI opens chDB itself, still read-only.
    out = tagstream("query", "SELECT count() AS n FROM tags", "--format", "csv", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["n", "25"]
    refused = tagstream("query", "INSERT INTO tags (message_id) VALUES ('x')", env=env)
    assert refused.returncode == 2
    assert "read-only: INSERT statements are refused" in refused.stderr


@pytest.mark.integration
def test_http_api_refuses_writes(settings, loaders):
    """POST /query with ALTER answers 400 with the reason; reports are listed at /reports."""
    loader = loaders().wait_ready()
    response = httpx.post(f"{loader.url}/query", content=b"ALTER TABLE tags DELETE WHERE 1", timeout=30)
    assert response.status_code == 400
    assert "ALTER statements are refused" in response.json()["error"]
    assert "campaigns" in httpx.get(f"{loader.url}/reports", timeout=30).json()
    assert os.path.exists(settings.data_dir / "loader" / "api.json")


class CrashWhileCommitting(Exception):
    """Stands for the process dying inside its first commit."""


@pytest.mark.integration
def test_a_crash_while_committing_replays_both_uncommitted_rounds_at_their_cuts(settings, tmp_path):
    """The next round is written while the previous one commits. A crash inside that commit
    leaves two rounds inserted and neither committed; the restarted loader finds both intents,
    cuts the same two ranges (same tokens, dropped by ClickHouse) and loads the rest: every
    record exactly once. Cut as one range, records 5-9 would load twice."""
    from services.common.runtime import StopFlag
    from services.loader import ddl
    from services.loader.main import Loader, loader_consumer
    from services.loader.settings import LoaderSettings
    from services.loader.sink import ClickHouseSink

    serde = Serde()
    template = fixture_records("tag_hit")[0]
    records = [dict(template, message_id=f"c-{i}") for i in range(12)]
    produce(settings, VALID_TAGS, encoded(serde, "tag_hit", records), partition=0)
    loader_settings = LoaderSettings(
        **settings.model_dump(), loader_source="valid", loader_flush_rows=5, loader_group_id="crash-commit"
    )
    client = connect(loader_settings.clickhouse_dsn)
    ddl.apply(client)
    sink, producer = ClickHouseSink(client), make_producer(loader_settings)

    class Crashing(Loader):
        dead = False

        def _commit(self, batches):  # dies in its first commit; a dead process commits nothing
            if not self.dead:
                self.dead = True
                raise CrashWhileCommitting

    consumer = loader_consumer(loader_settings)
    with pytest.raises(CrashWhileCommitting):  # rounds 0-4 and 5-9 written, nothing committed
        Crashing(loader_settings, sink, consumer, producer).run(StopFlag())
    consumer.close()
    assert client.query("SELECT count() FROM tags").result_rows == [(10,)]

    # Restarted with other batching settings: without the intents it would cut 0-11 as one batch.
    restarted_settings = loader_settings.model_copy(
        update={"loader_flush_rows": 100, "loader_flush_seconds": 1}
    )
    consumer = loader_consumer(restarted_settings)
    restarted, stop = Loader(restarted_settings, sink, consumer, producer), StopFlag()
    thread = threading.Thread(target=restarted.run, args=(stop,), daemon=True)
    thread.start()
    try:
        query = "SELECT count(), uniqExact(message_id) FROM tags"
        wait_until(lambda: client.query(query).result_rows[0][1] == 12, timeout=60, what="12 tags")
    finally:
        stop.set()
        thread.join(30)
        consumer.close()
    assert client.query(query).result_rows == [(12, 12)]
    client.close()
