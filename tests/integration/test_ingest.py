"""ingest against the real broker: validation, normalisation, dead letters, dedupe, crash safety."""

from __future__ import annotations

import pytest

from services.common.topics import (
    DEAD_LETTERS,
    DELIVERY_RECEIPTS,
    EVENTS,
    LOCATIONS,
    PROFILE_UPDATES,
    TAGS,
    VALID_DELIVERY_RECEIPTS,
    VALID_EVENTS,
    VALID_LOCATIONS,
    VALID_PROFILE_UPDATES,
    VALID_TAGS,
)
from tests import records as r
from tests.helpers import ServiceProcess, wait_until
from tests.kafka_io import produce_records, read_topic

DAY = 24 * 3600 * 1000
DEFINITIONS = """
strict_sources: [backend]
events:
  - name: Order Completed
    properties: {order_id: string, revenue: number}
"""


@pytest.fixture
def ingest_env(env, settings):
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "event-definitions.yaml").write_text(DEFINITIONS)
    return {**env, "TAGSTREAM_CONFIG_DIR": str(settings.data_dir), "TAGSTREAM_INSTANCE_ID": "test-0"}


def ingest(ingest_env, tmp_path) -> ServiceProcess:
    return ServiceProcess("ingest", ingest_env, tmp_path / "ingest.log")


@pytest.mark.integration
def test_mixed_input_yields_exactly_the_valid_records_and_reasoned_dead_letters(
    settings, ingest_env, tmp_path
):
    """Each valid record comes out once, normalised; each invalid one is a dead letter with its reason."""
    now = r.now_ms()
    valid = {
        TAGS: [r.tag("registration_complete", message_id="ok-tag", email="  Ann@Example.COM ")],
        EVENTS: [
            r.event("Order Completed", "purchase", '{"order_id":"o1","revenue":9.5}', message_id="ok-order"),
            r.event("app_launch", "app_launch", message_id="ok-backfill", t=now - 400 * DAY, install_id="d9")
            | {"backfill": True},
            r.event("Anything", message_id="ok-undeclared"),
        ],
        LOCATIONS: [r.location(message_id="ok-gps")],
        DELIVERY_RECEIPTS: [r.receipt("sms", "clicked", message_id="ok-receipt", phone="+353 (86) 123-4567")],
        PROFILE_UPDATES: [
            r.profile_update(
                "personalize",
                [
                    r.attribute("monthly_usage_gb", "512.5", "number"),
                    r.attribute("signup_date", "2024-02-29", "date"),
                ],
                message_id="ok-login",
                install_id="d1",
                external_user_id="u1",
            )
        ],
    }
    invalid = {
        TAGS: [
            (r.tag("", message_id="bad-empty-tag"), "schema_violation"),
            (r.tag("x" * 300, message_id="bad-long-tag"), "value_out_of_range"),
            (r.tag(message_id="bad-future", t=now + 2 * DAY), "time_out_of_range"),
            (r.tag(message_id="bad-old", t=now - 400 * DAY), "time_out_of_range"),
        ],
        EVENTS: [
            (
                r.envelope("bad-no-id", install_id="") | {"name": "x", "kind": "custom", "properties": "{}"},
                None,
            ),
            (
                r.event(
                    "Order Completed", properties='{"order_id":"o2","revenue":"lots"}', message_id="bad-type"
                ),
                "type_mismatch",
            ),
            (
                r.event(
                    "Order Completed", properties='{"order_id":"o3","coupon":"X"}', message_id="bad-prop"
                ),
                "unknown_property",
            ),
            (r.event("Undeclared", message_id="bad-strict") | {"source": "backend"}, "undeclared_event"),
            (
                r.event(properties='{"a":{"b":{"c":{"d":{"e":{"f":1}}}}}}', message_id="bad-deep"),
                "value_out_of_range",
            ),
        ],
        LOCATIONS: [
            (r.location(lat=123.0, message_id="bad-lat"), "value_out_of_range"),
            (r.location(accuracy_m=-1.0, message_id="bad-accuracy"), "value_out_of_range"),
        ],
        DELIVERY_RECEIPTS: [(r.receipt("sms", "opened", message_id="bad-status"), "unknown_status")],
        PROFILE_UPDATES: [
            (
                r.profile_update(attributes=[r.attribute("age", "old", "number")], message_id="bad-attr"),
                "type_mismatch",
            ),
            (r.profile_update(message_id="bad-email", email="not-an-email"), "invalid_email"),
            (r.profile_update(message_id="bad-phone", phone="12"), "invalid_phone"),
            (r.profile_update("personalize", message_id="bad-login", install_id="d2"), "missing_identity"),
        ],
    }
    expected_reasons = {rec["message_id"]: reason for items in invalid.values() for rec, reason in items}
    expected_reasons["bad-no-id"] = "missing_identity"
    for spec in valid:
        produce_records(settings, spec, valid[spec] + [rec for rec, _ in invalid.get(spec, [])])
    produce_records(settings, EVENTS, [b"\x00garbage", b"{}"])
    produce_records(settings, TAGS, [b"\xc3\x01" + b"\x00" * 8 + b"x" * (300 * 1024)])  # over 256 KiB

    with ingest(ingest_env, tmp_path):
        outputs = {
            out: read_topic(settings, out, len(valid[raw]))
            for raw, out in [
                (TAGS, VALID_TAGS),
                (EVENTS, VALID_EVENTS),
                (LOCATIONS, VALID_LOCATIONS),
                (DELIVERY_RECEIPTS, VALID_DELIVERY_RECEIPTS),
                (PROFILE_UPDATES, VALID_PROFILE_UPDATES),
            ]
        }
        letters = read_topic(settings, DEAD_LETTERS, len(expected_reasons) + 3)

    for raw, out in [
        (TAGS, VALID_TAGS),
        (EVENTS, VALID_EVENTS),
        (LOCATIONS, VALID_LOCATIONS),
        (DELIVERY_RECEIPTS, VALID_DELIVERY_RECEIPTS),
        (PROFILE_UPDATES, VALID_PROFILE_UPDATES),
    ]:
        assert sorted(rec["message_id"] for _, rec in outputs[out]) == sorted(
            v["message_id"] for v in valid[raw]
        )
    tag_out = outputs[VALID_TAGS][0][1]
    assert tag_out["identity"]["email"] == "ann@example.com"  # trimmed, lower-cased
    assert tag_out["received_time"] is not None
    assert outputs[VALID_DELIVERY_RECEIPTS][0][1]["identity"]["phone"] == "353861234567"
    keys = {rec["message_id"]: key for _, (key, rec) in enumerate(outputs[VALID_PROFILE_UPDATES])}
    assert keys["ok-login"] == b"install_id:d1"

    by_id = {letter["message_id"]: letter for _, letter in letters}
    for message_id, reason in expected_reasons.items():
        assert by_id[message_id]["reason"] == reason, message_id
        assert by_id[message_id]["source_topic"] in {
            "tags",
            "events",
            "locations",
            "delivery-receipts",
            "profile-updates",
        }
    anonymous = [letter for letter in by_id.values() if letter["message_id"].startswith("dlq-")]
    assert sorted(letter["reason"] for letter in anonymous) == ["oversized", "undecodable", "undecodable"]
    assert all(letter["original"] for letter in anonymous)
    assert all(letter["message"] for letter in by_id.values())


@pytest.mark.integration
def test_duplicates_pass_once_and_sigkill_loses_nothing(settings, ingest_env, tmp_path):
    """Records delivered twice pass once, also across a SIGKILL and restart; no valid record is lost."""
    first = [r.event(message_id=f"e{i}", install_id=f"d{i % 7}") for i in range(600)]
    produce_records(settings, EVENTS, first + first[:50])  # 50 duplicates in the same run
    service = ingest(ingest_env, tmp_path).start()
    try:
        wait_until(
            lambda: (
                "tagstream_ingest_records_in_total" in service.metrics()
                and _count(service.metrics(), "tagstream_ingest_records_in_total") > 0
            ),
            what="ingest progress",
        )
        service.kill()  # mid-stream or just after: either way nothing may be lost or doubled
        second = [r.event(message_id=f"e{i}", install_id=f"d{i % 7}") for i in range(600, 900)]
        produce_records(settings, EVENTS, second + first[100:200])  # late duplicates of processed records
        service = ingest(ingest_env, tmp_path).start()
        out = read_topic(settings, VALID_EVENTS, 900)
    finally:
        service.terminate()
    ids = [rec["message_id"] for _, rec in out]
    assert len(ids) == 900
    assert set(ids) == {f"e{i}" for i in range(900)}


def _count(metrics_text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines() if line.startswith(name + "{")
    )


@pytest.mark.integration
def test_fix_definitions_then_replay_dead_letters(settings, ingest_env, tmp_path):
    """An event refused as undeclared is listed by `dlq inspect`; after declaring it (reloaded
    without restart), `dlq replay` feeds it through again and it comes out valid, once."""
    from tests.helpers import tagstream

    refused = r.event("Plan Changed", properties='{"plan":"fibre-500"}', message_id="late-declared")
    refused["source"] = "backend"
    env = {**ingest_env, "TAGSTREAM_INGEST_DEFINITIONS_RELOAD_S": "0.2"}
    with ingest(env, tmp_path) as service:
        produce_records(settings, EVENTS, [refused])
        read_topic(settings, DEAD_LETTERS, 1)
        inspected = tagstream("dlq", "inspect", "--reason", "undeclared_event", env=env)
        assert inspected.returncode == 0, inspected.stderr
        [line] = inspected.stdout.splitlines()
        assert '"message_id": "late-declared"' in line and '"source_topic": "events"' in line

        definitions = settings.data_dir / "event-definitions.yaml"
        definitions.write_text(DEFINITIONS + "  - name: Plan Changed\n    properties: {plan: string}\n")
        wait_until(
            lambda: "tagstream_ingest_declared_events 2.0" in service.metrics(), what="definitions reloaded"
        )
        replayed = tagstream("dlq", "replay", "--reason", "undeclared_event", env=env)
        assert replayed.stdout.strip() == "replayed 1 records", replayed.stderr
        [(key, record)] = read_topic(settings, VALID_EVENTS, 1)
        assert record["message_id"] == "late-declared" and key == b"install_id:dev-1"
