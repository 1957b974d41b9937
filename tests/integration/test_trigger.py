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
from aiokafka.partitioner import murmur2

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
from services.trigger.message import message_id
from tests.conftest import settings_env
from tests.enricher_records import event
from tests.helpers import ServiceProcess, wait_until

pytestmark = pytest.mark.integration
T0 = 1_795_000_000_000  # 2026-11-19 08:26:40 UTC: the test clock starts here
HOUR = 3_600_000
OUTAGE_AT = datetime.fromtimestamp((T0 + 2 * HOUR) / 1000, UTC).isoformat()
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
  - id: promo
    trigger: {kind: event, name: promo_click}
    caps: [{max: 1, window: 1h}]
    reentry: {mode: always}
    channels: {order: [email]}
    templates:
      email: {subject: "Today only", text: "x"}
  - id: broken
    trigger: {kind: event, name: broken_template}
    channels: {order: [email]}
    templates:
      email: {subject: "Hello {{ person.nickname }}", text: "x"}
  - id: outage
    transactional: true
    trigger: {kind: broadcast, segment: area-d15, at: "OUTAGE_AT"}
    channels: {order: [email]}
    templates:
      email: {subject: "Outage in your area", text: "We are on it"}
""".replace("OUTAGE_AT", OUTAGE_AT)


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

    def _send(
        self, spec: Any, key: str, record_type: str, record: dict[str, Any], flush: bool = True
    ) -> None:
        self.producer.produce(
            topic_name(spec, self.settings), key=key.encode(), value=self.serde.encode(record_type, record)
        )
        if flush:
            self.producer.flush(30)

    def profile(self, person: str, **fields: Any) -> None:
        attrs = [
            {"name": k, "type": "string", "value": v, "scope": "person", "time": T0}
            for k, v in fields.pop("attributes", {}).items()
        ]
        record = {"person_id": person, "updated_time": T0, "attributes": attrs, **fields}
        self._send(PROFILES, person, "profile", record)

    def event(self, person: str, mid: str, name: str, t: int = T0, flush: bool = True, **props: Any) -> None:
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
        self._send(ENRICHED, person, "enriched_event", envelope, flush)

    def burst(self, person: str, name: str, ids: list[str]) -> None:
        """Events of one person produced at once (one flush): the trigger reads them in one fetch."""
        for mid in ids:
            self.event(person, mid, name, flush=False)
        self.producer.flush(30)

    def merge(self, survivor: str, mid: str, merged: str, t: int = T0) -> None:
        """The enricher's `merge` envelope: ``merged`` was merged into ``survivor`` (keyed survivor)."""
        envelope = {
            "message_id": mid,
            "person_id": survivor,
            "device_id": None,
            "event_time": t,
            "kind": "merge",
            "record_type": None,
            "original": None,
            "details": {"merged_from": merged},
        }
        self._send(ENRICHED, survivor, "enriched_event", envelope)

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


def trigger_process(settings: Settings, tmp_path: Path, clock: Path, log: str, **env: str) -> ServiceProcess:
    campaigns = tmp_path / "campaigns.yaml"
    campaigns.write_text(textwrap.dedent(CAMPAIGNS))
    return ServiceProcess(
        "trigger",
        settings_env(settings),
        tmp_path / log,
        TAGSTREAM_TRIGGER_CAMPAIGNS_FILE=str(campaigns),
        TAGSTREAM_TRIGGER_CLOCK_FILE=str(clock),
        TAGSTREAM_TRIGGER_TICK_SECONDS="0.2",
        **env,
    )


@pytest.fixture
def trigger(settings: Settings, tmp_path: Path, clock: Path) -> Iterator[ServiceProcess]:
    service = trigger_process(settings, tmp_path, clock, "trigger.log")
    try:
        yield service.start()
    finally:
        if service.process is not None:  # also when start() failed: never leave it running
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


def test_an_event_read_before_its_profile_waits_for_it(trigger: ServiceProcess, pipeline: Pipeline):
    """A new person's signup that overtakes their first profile (another topic) still gets the email."""
    pipeline.event("p-new", "ev-signup-new", "signup")
    wait_until(
        lambda: metric(trigger, 'tagstream_trigger_parked_total{released="parked"}') >= 1,
        what="the event waiting for its profile",
    )
    pipeline.poll()
    assert pipeline.emails("welcome") == []
    pipeline.profile("p-new", **ANN)
    [email] = pipeline.wait(lambda: pipeline.emails("welcome"), "the welcome email")
    assert email["person_id"] == "p-new" and email["trigger_event_id"] == "ev-signup-new"


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


def test_a_burst_of_one_persons_events_obeys_the_frequency_cap(
    settings: Settings, pipeline: Pipeline, tmp_path: Path, clock: Path
):
    """Ten qualifying events of one person produced at once are decided in batches, before any of
    their states is written: the campaign's cap of one per hour still lets one message through."""
    service = trigger_process(settings, tmp_path, clock, "burst.log", TAGSTREAM_TRIGGER_BATCH_WITHIN_S="1")
    try:
        service.start()
        known_person(pipeline, service, "p-burst", 1, **ANN)
        pipeline.burst("p-burst", "promo_click", [f"ev-promo-{n}" for n in range(10)])
        capped = 'tagstream_trigger_skipped_total{campaign="promo",reason="frequency_cap"}'
        sent = 'tagstream_trigger_messages_total{campaign="promo",channel="email"}'
        wait_until(lambda: metric(service, capped) + metric(service, sent) >= 10, what="ten events decided")
        assert (metric(service, sent), metric(service, capped)) == (1, 9)
        batches = metric(service, "tagstream_trigger_batch_inputs_count")
        singles = metric(service, 'tagstream_trigger_batch_inputs_bucket{le="1.0"}')
        assert batches - singles >= 1, "no batch held more than one input: the test proves nothing"
        pipeline.wait(lambda: pipeline.emails("promo"), "the one promo email")
    finally:
        service.terminate()
    pipeline.poll()
    assert [m["trigger_event_id"] for m in pipeline.emails("promo")] == ["ev-promo-0"]


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


def test_broadcast_reaches_the_segment_once_even_across_a_restart(
    trigger: ServiceProcess, pipeline: Pipeline, clock: Path
):
    """At its time the outage email goes to the area's members only, and a restart does not resend it."""
    known_person(pipeline, trigger, "p-in", 1, **ANN)
    known_person(pipeline, trigger, "p-out", 2, **ANN)
    pipeline.segment("p-in", "area-d15", "entered")
    pipeline.segment("p-out", "area-d15", "entered")
    pipeline.segment("p-out", "area-d15", "exited", T0 + 1)
    wait_until(
        lambda: metric(trigger, 'tagstream_trigger_inputs_total{input="segment"}') >= 3, what="segments"
    )
    set_clock(clock, T0 + 2 * HOUR + 1000)
    [email] = pipeline.wait(lambda: pipeline.emails("outage"), "the outage email")
    assert email["person_id"] == "p-in" and email["send_slot"] == OUTAGE_AT
    assert trigger.terminate() == 0  # SIGTERM: a clean stop
    trigger.start()
    wait_until(
        lambda: metric(trigger, "tagstream_trigger_now_seconds") >= (T0 + 2 * HOUR) / 1000,
        what="the restarted service to read the clock past the broadcast",
    )
    known_person(pipeline, trigger, "p-late", 1, **ANN)
    pipeline.event("p-late", "ev-signup-late", "signup")
    pipeline.wait(lambda: pipeline.emails("welcome"), "a later message")
    assert [m["person_id"] for m in pipeline.emails("outage")] == ["p-in"]
    # Not even attempted again (the done occurrence came back from the broadcasts table):
    assert metric(trigger, 'tagstream_trigger_ticks_total{kind="due"}') == 0


def test_sigkill_between_a_message_and_its_state_does_not_send_it_twice(
    settings: Settings, pipeline: Pipeline, tmp_path: Path, clock: Path
):
    """Killed after the message is acknowledged and before the state is written: one copy, not two."""
    doomed = message_id("welcome", "p-win", "ev-signup-w", "", "email", "")
    first = trigger_process(
        settings, tmp_path, clock, "first.log", TAGSTREAM_TRIGGER_TEST_KILL_AFTER_MESSAGE=doomed
    )
    try:
        first.start()
        known_person(pipeline, first, "p-win", 1, **ANN)
        pipeline.event("p-win", "ev-signup-w", "signup")
        wait_until(lambda: first.process.poll() is not None, what="the test hook's SIGKILL")
        assert first.process.returncode == -9
    finally:
        first.kill()
    [email] = pipeline.wait(lambda: pipeline.emails("welcome"), "the message sent before the kill")
    assert email["message_id"] == doomed
    second = trigger_process(settings, tmp_path, clock, "second.log")
    try:
        second.start()
        wait_until(lambda: committed(settings, ENRICHED) >= 1, what="the replayed event committed")
        known_person(pipeline, second, "p-after", 1, **ANN)
        pipeline.event("p-after", "ev-signup-a", "signup")
        pipeline.wait(lambda: len(pipeline.emails("welcome")) >= 2, "a later message")
        assert metric(second, 'tagstream_trigger_duplicates_total{what="replayed_message"}') == 1
    finally:
        second.terminate()
    assert [m["person_id"] for m in pipeline.emails("welcome")] == ["p-win", "p-after"]
    assert {r["message_id"] for r in pipeline.receipts if r["send_id"] == doomed} == {f"sent-{doomed}"}


def test_pending_sends_survive_a_rebalance_and_losing_an_instance(
    settings: Settings, pipeline: Pipeline, tmp_path: Path, clock: Path
):
    """Eight delayed sends scheduled by one instance; a second joins, the first is killed: eight emails."""
    people = [f"p-r{i}" for i in range(8)]
    first = trigger_process(settings, tmp_path, clock, "a.log")
    second = trigger_process(
        settings.model_copy(update={"data_dir": tmp_path / "b"}), tmp_path, clock, "b.log"
    )
    try:
        first.start()
        for i, person in enumerate(people):
            known_person(pipeline, first, person, i + 1, **ANN)
        for person in people:
            pipeline.event(person, f"ev-cart-{person}", "cart_updated", total=1)
        wait_until(
            lambda: metric(first, 'tagstream_trigger_scheduled_total{reason="delay"}') >= 8,
            what="8 scheduled",
        )
        wait_until(lambda: committed(settings, ENRICHED) >= 8, what="the events committed")
        second.start()  # ready once it owns (and has indexed) some partitions: a rebalance happened
        first.kill()
        set_clock(clock, T0 + HOUR + 1000)
        pipeline.wait(lambda: len(pipeline.emails("cart-reminder")) >= 8, "eight reminders", timeout=90)
        pipeline.event("p-r0", "ev-signup-r", "signup")
        pipeline.wait(lambda: pipeline.emails("welcome"), "a later message")
    finally:
        first.kill()
        if second.process is not None:
            second.terminate()
    assert sorted(m["person_id"] for m in pipeline.emails("cart-reminder")) == people


def partition_of(person: str) -> int:
    """The partition faust's producer (and so the enricher, and this test's) picks for a person id."""
    return (murmur2(person.encode()) & 0x7FFFFFFF) % ENRICHED.partitions


def test_a_pending_send_follows_a_merge_to_the_survivor(
    trigger: ServiceProcess, pipeline: Pipeline, clock: Path
):
    """A guest's cart reminder is pending when the guest logs in (the enricher merges the guest into
    Sara; their partitions differ): at its time one reminder goes, to Sara's address, none to the
    guest; a guest event read after the hand-over is Sara's; a copy of the merge changes nothing."""
    guest, sara = "p-guest", "p-sara"
    assert partition_of(guest) != partition_of(sara)
    known_person(pipeline, trigger, guest, 1, email="guest@example.com", subscriptions=["email"],
                 attributes={"first_name": "Guest"})  # fmt: skip
    known_person(pipeline, trigger, sara, 2, email="sara@example.com", subscriptions=["email"],
                 attributes={"first_name": "Sara"})  # fmt: skip
    pipeline.event(guest, "ev-cart-g", "cart_updated", total=9)
    wait_until(
        lambda: metric(trigger, 'tagstream_trigger_scheduled_total{reason="delay"}') >= 1, what="scheduled"
    )
    pipeline.merge(sara, "ev-login-g", guest)
    wait_until(
        lambda: metric(trigger, 'tagstream_trigger_handovers_total{step="folded"}') >= 1,
        what="the guest's state folded into Sara's",
    )
    set_clock(clock, T0 + HOUR + 1000)
    [email] = pipeline.wait(lambda: pipeline.emails("cart-reminder"), "the reminder after an hour")
    assert email["person_id"] == sara and email["destination"] == "sara@example.com"
    assert email["content"]["subject"] == "Your cart of 9" and email["trigger_event_id"] == "ev-cart-g"
    assert email["message_id"] == message_id("cart-reminder", sara, "ev-cart-g", "", "email", "")
    pipeline.event(guest, "ev-signup-g", "signup")  # the guest's partition read it after the merge
    [welcome] = pipeline.wait(lambda: pipeline.emails("welcome"), "the guest's signup welcoming Sara")
    assert welcome["person_id"] == sara and welcome["destination"] == "sara@example.com"
    assert welcome["content"]["subject"] == "Welcome, Sara"
    pipeline.merge(sara, "ev-login-g", guest)  # the enricher's copy after a crash
    wait_until(
        lambda: metric(trigger, 'tagstream_trigger_handovers_total{step="duplicate"}') >= 1,
        what="the copy of the merge answered by the marker",
    )
    pipeline.event(sara, "ev-signup-s", "signup")  # a later message: everything before it is out
    pipeline.wait(lambda: len(pipeline.emails("welcome")) >= 2, "a later message")
    assert [m["person_id"] for m in pipeline.emails("cart-reminder")] == [sara]
    assert [m["person_id"] for m in pipeline.emails("welcome")] == [sara, sara]
    assert all(m["person_id"] != guest for topic in pipeline.messages.values() for m in topic)
