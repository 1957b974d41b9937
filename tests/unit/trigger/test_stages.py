"""The trigger's record paths with dict tables: the exact ordered sends and writes per input."""

from __future__ import annotations

from typing import Any

from services.common.serde import Serde
from services.common.steps import SourcePosition
from services.trigger.stages import Outcome, Stages, tick_kind, tick_value
from services.trigger.state import to_ms
from tests.enricher_records import event
from tests.unit.trigger.build import T0, at, context

CAMPAIGNS = """
campaigns:
  - id: welcome
    trigger: {kind: event, name: signup}
    channels: {order: [email]}
    templates:
      email: {subject: "Hi {{ person.first_name }}", text: "Welcome"}
  - id: reminder
    trigger: {kind: event, name: cart}
    delay: 1h
    channels: {order: [email, webhook]}
    templates:
      email: {subject: "Cart", text: "Still there"}
      webhook: {url: "https://hooks.example.com/cart", body: "{{ person.id }}"}
  - id: broken
    trigger: {kind: event, name: oops}
    channels: {order: [email]}
    templates:
      email: {subject: "{{ person.nickname }}", text: "x"}
  - id: vip
    trigger: {kind: segment, segment: vip, change: entered}
    channels: {order: [email]}
    templates:
      email: {subject: "VIP", text: "x"}
  - id: outage
    transactional: true
    trigger: {kind: broadcast, segment: vip, at: "2026-11-23T13:00:00Z"}
    channels: {order: [email]}
    templates:
      email: {subject: "Outage", text: "x"}
"""
SERDE = Serde()
TOPICS = {
    name: f"t-{name}"
    for name in ("outbound.email", "outbound.webhook", "delivery-receipts", "dead-letters", "outbound.sms")
}


class Tables:
    def __init__(self) -> None:
        self.persons: dict[str, Any] = {}
        self.states: dict[str, Any] = {}

    def apply(self, outcome: Outcome) -> Outcome:
        for table, key, value in outcome.writes:
            getattr(self, table)[key] = value
        return outcome


def stages() -> Stages:
    ctx = context(CAMPAIGNS)
    return Stages(SERDE, lambda: ctx, TOPICS)


def source(value: bytes, topic: str = "enriched", offset: int = 0) -> SourcePosition:
    return SourcePosition(topic, 2, offset, b"p-1", value)


def profile_bytes(**fields: Any) -> bytes:
    record = {
        "person_id": "p-1",
        "updated_time": to_ms(T0),
        "email": "ann@example.com",
        "subscriptions": ["email"],
        "attributes": [
            {"name": "first_name", "type": "string", "value": "Ann", "scope": "person", "time": 0}
        ],
        **fields,
    }
    return SERDE.encode("profile", record)


def enriched_bytes(mid: str, name: str, when: Any = T0) -> bytes:
    original = SERDE.encode("event", event(mid, to_ms(when), "custom", name, external_user_id="u1"))
    env = {
        "message_id": mid,
        "person_id": "p-1",
        "device_id": None,
        "event_time": to_ms(when),
        "kind": "event",
        "record_type": "event",
        "original": original,
        "details": {},
    }
    return SERDE.encode("enriched_event", env)


def known(tables: Tables, s: Stages) -> None:
    tables.apply(s.profile(tables.persons, source(profile_bytes(), "profiles")))


def shape(outcome: Outcome) -> list[str]:
    return [send.output for send in outcome.sends] + [f"write {t}" for t, _, _ in outcome.writes]


class TestProfile:
    def test_a_profile_is_kept_with_its_partition(self):
        """The persons entry holds the profile's fields and the partition it came from."""
        tables, s = Tables(), stages()
        outcome = tables.apply(s.profile(tables.persons, source(profile_bytes(), "profiles")))
        assert shape(outcome) == ["write persons"]
        assert tables.persons["p-1"]["partition"] == 2
        assert tables.persons["p-1"]["profile"]["email"] == "ann@example.com"


class TestEnriched:
    def test_an_event_sends_the_message_then_its_receipt_then_writes_state(self):
        """Outputs come before the state write, so a crash in between replays instead of losing them."""
        tables, s = Tables(), stages()
        known(tables, s)
        outcome = tables.apply(
            s.enriched(tables.persons, tables.states, source(enriched_bytes("e1", "signup")), at(1))
        )
        assert shape(outcome) == ["outbound.email", "delivery-receipts", "write states"]
        _, message = SERDE.decode(outcome.sends[0].value)
        assert message["content"]["subject"] == "Hi Ann" and outcome.sends[0].key == b"p-1"
        assert outcome.due == {"p-1": None}

    def test_a_replayed_input_changes_nothing(self):
        """The same enriched event read again after a crash sends nothing and writes nothing."""
        tables, s = Tables(), stages()
        known(tables, s)
        tables.apply(s.enriched(tables.persons, tables.states, source(enriched_bytes("e1", "signup")), at(1)))
        again = s.enriched(tables.persons, tables.states, source(enriched_bytes("e1", "signup")), at(2))
        assert shape(again) == []

    def test_undecodable_bytes_become_a_dead_letter(self):
        """Bytes that are not a record are parked with reason undecodable; nothing else happens."""
        tables, s = Tables(), stages()
        outcome = s.enriched(tables.persons, tables.states, source(b"not avro"), at(1))
        assert shape(outcome) == ["dead-letters"]
        _, letter = SERDE.decode(outcome.sends[0].value)
        assert (letter["service"], letter["reason"]) == ("trigger", "undecodable")

    def test_a_missing_template_variable_is_a_dead_letter_and_state_moves_on(self):
        """The failed message is a dead letter naming campaign and variable; the input counts as applied."""
        tables, s = Tables(), stages()
        known(tables, s)
        outcome = tables.apply(
            s.enriched(tables.persons, tables.states, source(enriched_bytes("e2", "oops")), at(1))
        )
        assert shape(outcome) == ["dead-letters", "write states"]
        _, letter = SERDE.decode(outcome.sends[0].value)
        assert letter["reason"] == "template_error" and "broken" in letter["message"]
        assert letter["message_id"].startswith("msg-")


class TestTime:
    def test_a_delayed_send_waits_for_its_tick(self):
        """The event only schedules; the tick at the due time sends; an early tick does not."""
        tables, s = Tables(), stages()
        known(tables, s)
        outcome = tables.apply(
            s.enriched(tables.persons, tables.states, source(enriched_bytes("e3", "cart")), at(1))
        )
        assert shape(outcome) == ["write states"] and outcome.due == {"p-1": to_ms(at(60))}
        tick = source(tick_value("due", 0), "ticks")
        early = tables.apply(s.tick_person("p-1", tables.persons, tables.states, tick, at(30)))
        assert [send.output for send in early.sends] == []
        due = tables.apply(s.tick_person("p-1", tables.persons, tables.states, tick, at(60)))
        assert shape(due) == ["outbound.email", "delivery-receipts", "write states"]
        assert due.due == {"p-1": None}

    def test_broadcasts_are_due_once_their_time_came_and_until_done(self):
        """A broadcast occurrence is due at its time, and no more once recorded as done."""
        s = stages()
        assert s.due_broadcasts(set(), to_ms(at(59))) == []
        [(campaign, key)] = s.due_broadcasts(set(), to_ms(at(60)))
        assert campaign == "outage" and s.due_broadcasts({key}, to_ms(at(61))) == []

    def test_a_broadcast_reaches_a_segment_member(self):
        """Everyone of the partition in the segment gets the broadcast message."""
        tables, s = Tables(), stages()
        known(tables, s)
        seg = {
            "change_id": "c1",
            "person_id": "p-1",
            "segment_id": "vip",
            "change": "entered",
            "change_time": to_ms(T0),
            "reason": "timer",
        }
        tables.apply(
            s.segment(tables.persons, tables.states, source(SERDE.encode("segment_membership", seg)), at(1))
        )
        tick = source(tick_value("due", 0), "ticks")
        outcome = s.broadcast_person("outage", "p-1", tables.persons, tables.states, tick, at(60))
        assert shape(outcome) == ["outbound.email", "delivery-receipts", "write states"]

    def test_tick_values_name_their_kind(self):
        assert tick_kind(tick_value("rebuild", 1)) == "rebuild" and tick_kind(b"junk") == "due"


class TestSegment:
    def test_entering_keeps_the_membership_then_sends(self):
        """The persons write (membership) comes first in the outcome, then the campaign's message."""
        tables, s = Tables(), stages()
        known(tables, s)
        seg = {
            "change_id": "c2",
            "person_id": "p-1",
            "segment_id": "vip",
            "change": "entered",
            "change_time": to_ms(T0),
            "reason": "event:purchase",
        }
        outcome = s.segment(
            tables.persons, tables.states, source(SERDE.encode("segment_membership", seg)), at(1)
        )
        assert shape(outcome) == ["outbound.email", "delivery-receipts", "write persons", "write states"]
        assert outcome.writes[0][2]["segments"] == {"vip": ["entered", to_ms(T0)]}
