"""The trigger service against the real broker, as a subprocess: event and segment triggers,
delays released by a test clock, template errors as dead letters, SIGKILL with a pending send."""

from __future__ import annotations

import shutil
import textwrap
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.common.kafka import make_consumer, make_producer
from services.common.serde import Serde
from services.common.settings import Settings
from services.common.topics import (
    DEAD_LETTERS,
    DELIVERY_RECEIPTS,
    ENRICHED,
    OUTBOUND_TOPICS,
    PROFILES,
    SEGMENT_MEMBERSHIP,
    topic_name,
)
from tests.conftest import settings_env
from tests.enricher_records import event
from tests.helpers import ServiceProcess, wait_until

pytestmark = pytest.mark.integration
T0 = 1_795_000_000_000  # 2026-11-19 08:26:40 UTC: the test clock starts here
HOUR = 3_600_000
CAMPAIGNS = """
campaigns:
  - id: welcome
    trigger: {kind: event, name: signup}
    channels: {order: [email]}
    templates:
      email: {subject: "Welcome, {{ person.first_name }}", text: "Start at https://example.com/start"}
  - id: cart-reminder
    trigger: {kind: event, name: cart_updated}
    delay: 1h
    channels: {order: [email]}
    templates:
      email: {subject: "Your cart of {{ event.properties.total }}", text: "Still there"}
  - id: vip-welcome
    trigger: {kind: segment, segment: vip, change: entered}
    channels: {order: [email]}
    templates:
      email: {subject: "You are a VIP now", text: "Thanks"}
  - id: broken
    trigger: {kind: event, name: broken_template}
    channels: {order: [email]}
    templates:
      email: {subject: "Hello {{ person.nickname }}", text: "x"}
"""


class Pipeline:
    """Writes the trigger's inputs (keyed by person id, murmur2 like faust) and reads its outputs."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.serde = settings, Serde()
        self.producer = make_producer(settings, partitioner="murmur2_random")
        self.reader = make_consumer(
            settings, f"trigger-test-{settings.topic_prefix}", **{"isolation.level": "read_committed"}
        )
        outs = (*OUTBOUND_TOPICS, DELIVERY_RECEIPTS, DEAD_LETTERS)
        self.reader.subscribe([topic_name(t, settings) for t in outs])
        self.messages: dict[str, list[dict[str, Any]]] = defaultdict(list)  # by topic spec name
        self.receipts: list[dict[str, Any]] = []
        self.dead: list[dict[str, Any]] = []

    def _send(self, spec: Any, key: str, record_type: str, record: dict[str, Any]) -> None:
        self.producer.produce(
            topic_name(spec, self.settings), key=key.encode(), value=self.serde.encode(record_type, record)
        )
        self.producer.flush(30)

    def profile(self, person: str, **fields: Any) -> None:
        attrs = [
            {"name": k, "type": "string", "value": v, "scope": "person", "time": T0}
            for k, v in fields.pop("attributes", {}).items()
        ]
        record = {"person_id": person, "updated_time": T0, "attributes": attrs, **fields}
        self._send(PROFILES, person, "profile", record)

    def event(self, person: str, mid: str, name: str, t: int = T0, **props: Any) -> None:
        original = self.serde.encode("event", event(mid, t, "custom", name, props, external_user_id=person))
        envelope = {
            "message_id": mid,
            "person_id": person,
            "device_id": None,
            "event_time": t,
            "kind": "event",
            "record_type": "event",
            "original": original,
            "details": {"name": name},
        }
        self._send(ENRICHED, person, "enriched_event", envelope)

    def segment(self, person: str, segment: str, change: str, t: int = T0) -> None:
        record = {
            "change_id": f"{person}:{segment}:{change}:{t}",
            "person_id": person,
            "segment_id": segment,
            "change": change,
            "change_time": t,
            "reason": "event:purchase",
        }
        self._send(SEGMENT_MEMBERSHIP, person, "segment_membership", record)

    def poll(self) -> None:
        for message in self.reader.consume(500, timeout=0.2):
            if message.error():
                continue
            record_type, record = self.serde.decode(message.value())
            if record_type == "dead_letter":
                self.dead.append(record)
            elif record_type == "delivery_receipt":
                self.receipts.append(record)
            else:
                self.messages[message.topic().removeprefix(self.settings.topic_prefix)].append(record)

    def wait(self, condition: Any, what: str, timeout: float = 60.0) -> Any:
        def check() -> Any:
            self.poll()
            return condition()

        return wait_until(check, timeout=timeout, what=what)

    def emails(self, campaign: str) -> list[dict[str, Any]]:
        return [m for m in self.messages["outbound.email"] if m["campaign_id"] == campaign]

    def close(self) -> None:
        self.reader.close()


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[Pipeline]:
    p = Pipeline(settings)
    yield p
    p.close()


@pytest.fixture
def clock(tmp_path: Path) -> Path:
    path = tmp_path / "clock"
    path.write_text(str(T0 + 1000))
    return path


def set_clock(clock: Path, ms: int) -> None:
    tmp = clock.with_suffix(".tmp")
    tmp.write_text(str(ms))
    tmp.replace(clock)  # atomic: the service never reads half a number


@pytest.fixture
def trigger(settings: Settings, tmp_path: Path, clock: Path) -> Iterator[ServiceProcess]:
    campaigns = tmp_path / "campaigns.yaml"
    campaigns.write_text(textwrap.dedent(CAMPAIGNS))
    service = ServiceProcess(
        "trigger",
        settings_env(settings),
        tmp_path / "trigger.log",
        TAGSTREAM_TRIGGER_CAMPAIGNS_FILE=str(campaigns),
        TAGSTREAM_TRIGGER_CLOCK_FILE=str(clock),
        TAGSTREAM_TRIGGER_TICK_SECONDS="0.2",
    )
    yield service.start()
    service.terminate()


def metric(service: ServiceProcess, line_start: str) -> float:
    for line in service.metrics().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def known_person(
    pipeline: Pipeline, service: ServiceProcess, person: str, profiles: int, **fields: Any
) -> None:
    """Send a profile and wait until the service applied it (profiles and events are different topics)."""
    pipeline.profile(person, **fields)
    wait_until(
        lambda: metric(service, 'tagstream_trigger_inputs_total{input="profile"}') >= profiles,
        what=f"{person}'s profile applied",
    )


ANN = {"email": "ann@example.com", "subscriptions": ["email"], "attributes": {"first_name": "Ann"}}


def test_event_triggered_email_with_sent_receipt(trigger: ServiceProcess, pipeline: Pipeline):
    """A signup of a subscribed person with an email becomes one welcome email and its sent receipt."""
    known_person(pipeline, trigger, "p-ann", 1, **ANN)
    pipeline.event("p-ann", "ev-signup-1", "signup")
    [email] = pipeline.wait(lambda: pipeline.emails("welcome"), "the welcome email")
    assert email["person_id"] == "p-ann" and email["destination"] == "ann@example.com"
    assert email["content"]["subject"] == "Welcome, Ann"
    assert email["trigger_event_id"] == "ev-signup-1"
    receipt = pipeline.wait(
        lambda: next((r for r in pipeline.receipts if r["send_id"] == email["message_id"]), None), "receipt"
    )
    assert receipt["status"] == "sent" and receipt["campaign_id"] == "welcome"
    assert receipt["identity"]["external_user_id"] is None and receipt["identity"]["email"] is None
    # A person without the email subscription gets nothing (and the service says why in metrics).
    known_person(pipeline, trigger, "p-bob", 2, email="bob@example.com", attributes={"first_name": "Bob"})
    pipeline.event("p-bob", "ev-signup-2", "signup")
    wait_until(
        lambda: (
            metric(trigger, 'tagstream_trigger_skipped_total{campaign="welcome",reason="no_channel"}') >= 1
        ),
        what="bob skipped",
    )
    pipeline.poll()
    assert [m["person_id"] for m in pipeline.emails("welcome")] == ["p-ann"]


def test_delayed_send_released_by_the_clock(trigger: ServiceProcess, pipeline: Pipeline, clock: Path):
    """A cart reminder waits for its hour: nothing before, exactly one message after the clock passes it."""
    known_person(pipeline, trigger, "p-cat", 1, **ANN)
    pipeline.event("p-cat", "ev-cart-1", "cart_updated", total=42)
    wait_until(
        lambda: metric(trigger, 'tagstream_trigger_scheduled_total{reason="delay"}') >= 1, what="scheduled"
    )
    set_clock(clock, T0 + HOUR - 1000)
    wait_until(
        lambda: metric(trigger, "tagstream_trigger_now_seconds") >= (T0 + HOUR - 1000) / 1000,
        what="the service to read the clock a second before the send is due",
    )
    assert metric(trigger, "tagstream_trigger_due_persons") == 1
    pipeline.poll()
    assert pipeline.emails("cart-reminder") == []
    set_clock(clock, T0 + HOUR + 1000)
    [email] = pipeline.wait(lambda: pipeline.emails("cart-reminder"), "the reminder after an hour")
    assert email["content"]["subject"] == "Your cart of 42"
    assert email["trigger_time"] == datetime.fromtimestamp(T0 / 1000, UTC)
    wait_until(lambda: metric(trigger, "tagstream_trigger_due_persons") == 0, what="nothing pending")


def test_segment_entered_trigger(trigger: ServiceProcess, pipeline: Pipeline):
    """Entering the vip segment (a segment-membership record) sends the VIP email once."""
    known_person(pipeline, trigger, "p-vip", 1, **ANN)
    pipeline.segment("p-vip", "vip", "entered")
    [email] = pipeline.wait(lambda: pipeline.emails("vip-welcome"), "the VIP email")
    assert email["trigger_kind"] == "segment" and email["person_id"] == "p-vip"


def test_bad_template_variable_is_a_dead_letter(trigger: ServiceProcess, pipeline: Pipeline):
    """A template naming a variable the person lacks dead-letters that message with a reason."""
    known_person(pipeline, trigger, "p-tpl", 1, **ANN)
    pipeline.event("p-tpl", "ev-broken-1", "broken_template")
    pipeline.event("p-tpl", "ev-signup-3", "signup")
    [letter] = pipeline.wait(lambda: pipeline.dead, "a dead letter")
    assert letter["service"] == "trigger" and letter["reason"] == "template_error"
    assert "broken" in letter["message"] and "nickname" in letter["message"]
    pipeline.wait(lambda: pipeline.emails("welcome"), "the next event still sends")
    assert pipeline.emails("broken") == []


def test_sigkill_with_a_pending_delayed_send_sends_exactly_once(
    trigger: ServiceProcess, pipeline: Pipeline, clock: Path, settings: Settings
):
    """Killed with a delayed send pending, local state wiped: after the restart one message, not 0 or 2."""
    known_person(pipeline, trigger, "p-kill", 1, **ANN)
    pipeline.event("p-kill", "ev-cart-k", "cart_updated", total=7)
    wait_until(
        lambda: metric(trigger, 'tagstream_trigger_scheduled_total{reason="delay"}') >= 1, what="scheduled"
    )
    wait_until(lambda: committed(settings, ENRICHED) >= 1, what="the event's offset committed")
    trigger.kill()
    shutil.rmtree(settings.data_dir / "trigger")  # the pending send must come back from the changelog
    set_clock(clock, T0 + HOUR + 1000)
    trigger.start()
    pipeline.wait(lambda: pipeline.emails("cart-reminder"), "the reminder after the restart")
    # Replays after the restart must not add a second copy: the message counter reaches 1 and a
    # later marker message arrives after it with still one reminder.
    known_person(pipeline, trigger, "p-kill", 1, **ANN)
    pipeline.event("p-kill", "ev-signup-k", "signup")
    pipeline.wait(lambda: pipeline.emails("welcome"), "a later message")
    assert len(pipeline.emails("cart-reminder")) == 1


def committed(settings: Settings, spec: Any) -> int:
    """Offsets the trigger's consumer group committed on ``spec``'s topic, summed over partitions."""
    from confluent_kafka import TopicPartition

    name = topic_name(spec, settings)
    group = f"{settings.topic_prefix}tagstream-trigger"
    consumer = make_consumer(settings, group)
    try:
        parts = [TopicPartition(name, p) for p in range(spec.partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def test_sigkill_right_after_a_send_leaves_one_message_id(
    trigger: ServiceProcess, pipeline: Pipeline, settings: Settings
):
    """Killed as soon as a message is out (before any commit): a replayed copy, if any, has the same id."""
    known_person(pipeline, trigger, "p-dup", 1, **ANN)
    pipeline.event("p-dup", "ev-signup-d", "signup")
    pipeline.wait(lambda: pipeline.emails("welcome"), "the welcome email")
    trigger.kill()
    trigger.start()
    wait_until(lambda: committed(settings, ENRICHED) >= 1, what="the event committed after the restart")
    known_person(pipeline, trigger, "p-dup-2", 1, **ANN)
    pipeline.event("p-dup-2", "ev-signup-d2", "signup")
    pipeline.wait(lambda: len(pipeline.emails("welcome")) >= 2, "a later message")
    ids = {m["message_id"] for m in pipeline.emails("welcome") if m["person_id"] == "p-dup"}
    assert len(ids) == 1
    receipts = {r["message_id"] for r in pipeline.receipts if r["send_id"] in ids}
    assert receipts == {f"sent-{next(iter(ids))}"}
