"""The enricher's stages with their edges (decode, step, encode), recorded as ordered actions."""

from __future__ import annotations

from typing import Any

from services.common.serde import Serde
from services.common.steps import SourcePosition
from services.enricher.person import PersonConfig
from services.enricher.stages import Outcome, Stages
from tests.enricher_records import T0, event, tag

SERDE = Serde()
TOPICS = {"routed": "routed", "enriched": "enriched", "profiles": "profiles", "dead-letters": "dead-letters"}


class Pipeline:
    """Runs both stages over dict tables the way the faust agents do: sends, then writes."""

    def __init__(self) -> None:
        self.stages = Stages(SERDE, PersonConfig(), "reject", TOPICS)
        self.identity: dict[str, Any] = {}
        self.persons: dict[str, Any] = {}
        self.actions: list[tuple[str, str]] = []
        self.offset = 0

    def perform(self, outcome: Outcome, table: dict[str, Any], name: str) -> list[bytes]:
        routed = []
        for send in outcome.sends:
            kind = SERDE.decode(send.value)[1].get("kind", "") if send.output != "dead-letters" else ""
            self.actions.append((f"send {send.output}", kind))
            if send.output == "routed":
                routed.append(send.value)
        for key, value in outcome.writes.items():
            table[key] = value
        if outcome.writes:
            self.actions.append((f"write {name}", ""))
        return routed

    def feed(self, record_type: str, record: dict[str, Any] | None, raw: bytes | None = None) -> None:
        value = raw if raw is not None else SERDE.encode(record_type, record)
        self.offset += 1
        source = SourcePosition("enricher.identity", 0, self.offset, b"k", value)
        for env in self.perform(self.stages.identity(self.identity, source), self.identity, "identity"):
            self.route(env)

    def route(self, value: bytes) -> None:
        pending = [value]
        while pending:
            self.offset += 1
            source = SourcePosition("routed", 0, self.offset, b"p", pending.pop(0))
            pending += self.perform(self.stages.person(self.persons, source), self.persons, "persons")


class TestStages:
    def test_a_record_sends_its_outputs_before_writing_state(self):
        """A first event: routed, then session start, the event and the profile, then each table write."""
        p = Pipeline()
        p.feed("event", event("e1", T0, install_id="d1"))
        assert p.actions == [
            ("send routed", "event"),
            ("write identity", ""),
            ("send enriched", "session_start"),
            ("send enriched", "event"),
            ("send profiles", ""),
            ("write persons", ""),
        ]

    def test_undecodable_bytes_become_one_dead_letter_and_nothing_else(self):
        """Garbage is parked with a reason; no state is written."""
        p = Pipeline()
        p.feed("event", None, raw=b"garbage")
        assert p.actions == [("send dead-letters", "")]
        assert p.identity == {}

    def test_a_replayed_envelope_is_skipped_by_the_person_stage(self):
        """After a crash the same routed envelope changes nothing and sends nothing."""
        p = Pipeline()
        p.feed("tag_hit", tag("t1", T0, "vip", install_id="d1"))
        person = next(iter(p.persons))
        envelope = SERDE.encode(
            "enriched_event",
            {
                "message_id": "t1",
                "person_id": person,
                "device_id": "install_id:d1",
                "event_time": T0,
                "kind": "tag",
                "record_type": "tag_hit",
                "original": SERDE.encode("tag_hit", tag("t1", T0, "vip")),
                "details": {},
            },
        )
        before, count = dict(p.persons), len(p.actions)
        p.route(envelope)
        assert p.persons == before and len(p.actions) == count

    def test_login_into_a_known_person_hands_the_anonymous_state_over(self):
        """merge to the anonymous person, absorb to the known one, then a merge event on enriched."""
        p = Pipeline()
        p.feed("event", event("e1", T0, "personalize", install_id="d1", external_user_id="u1"))
        p.feed("tag_hit", tag("t1", T0 + 1, "browsed", "shoes", install_id="d2"))
        p.actions.clear()
        p.feed("event", event("e2", T0 + 2, "personalize", install_id="d2", external_user_id="u1"))
        sends = [a for a in p.actions if a[0].startswith("send")]
        # Persons live on different partitions: only the multiset of sends is defined, not their order.
        assert sorted(sends) == sorted(
            [
                ("send routed", "merge"),
                ("send routed", "event"),
                ("send routed", "absorb"),
                ("send profiles", ""),
                ("send enriched", "event"),
                ("send profiles", ""),
                ("send enriched", "merge"),
                ("send profiles", ""),
            ]
        )
