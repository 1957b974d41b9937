"""The enricher's stages with their edges (decode, step, encode), recorded as ordered actions."""

from __future__ import annotations

from typing import Any

from services.common.serde import Serde
from services.common.steps import SourcePosition
from services.enricher import versions
from services.enricher.hop_copies import HopCopies
from services.enricher.person import PersonConfig, timer_due
from services.enricher.stages import Outcome, Stages, to_ms
from tests.enricher_records import T0, event, tag

SERDE = Serde()
TOPICS = {"routed": "routed", "enriched": "enriched", "profiles": "profiles", "dead-letters": "dead-letters"}


class Pipeline:
    """Runs both stages over dict tables the way the faust agents do: sends, then writes."""

    def __init__(self) -> None:
        self.now = 1_000_000  # the enricher's clock, epoch ms
        self.stages = Stages(SERDE, PersonConfig(), "reject", TOPICS, clock=lambda: self.now)
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

    def test_the_timer_ends_a_due_session_once_and_leaves_an_active_one(self):
        """A tick ends the sessions of the persons given that are due by the clock, and only those."""
        p = Pipeline()
        timeout = PersonConfig().session_timeout_ms
        p.feed("event", event("e1", T0, install_id="d1"))
        p.now += 60_000
        p.feed("event", event("e2", T0 + 1, install_id="d2"))
        quiet, busy = sorted(p.persons, key=lambda person: timer_due(p.persons[person]) or 0)
        assert {p.persons[quiet]["p"], p.persons[busy]["p"]} == {0}  # the index is rebuilt per partition
        p.now += timeout - 60_000
        outcome = p.stages.tick(p.persons, [quiet, busy])
        (end,) = [SERDE.decode(send.value)[1] for send in outcome.sends]
        assert (end["kind"], end["person_id"], to_ms(end["event_time"])) == ("session_end", quiet, T0)
        assert list(outcome.writes) == [quiet] and timer_due(outcome.writes[quiet]) is None
        p.perform(outcome, p.persons, "persons")
        assert p.stages.tick(p.persons, [quiet, busy]).sends == []  # busy: activity 60 s later
        p.now += 60_000
        assert [s.output for s in p.stages.tick(p.persons, [quiet, busy]).sends] == ["enriched"]

    def test_undecodable_bytes_become_one_dead_letter_and_nothing_else(self):
        """Garbage is parked with a reason; no state is written."""
        p = Pipeline()
        p.feed("event", None, raw=b"garbage")
        assert p.actions == [("send dead-letters", "")]
        assert p.identity == {}

    def test_a_bug_parks_the_record_under_its_own_message_id(self, monkeypatch):
        """An exception in a stage dead-letters the record as ``internal_error`` naming the
        exception, under the record's message id: counted as refused downstream, not as lost."""
        p = Pipeline()
        sent: list[dict[str, Any]] = []

        def crash(*_args: Any) -> None:
            raise KeyError("sess")

        monkeypatch.setattr("services.enricher.stages.apply", crash)
        original = p.perform

        def perform(outcome: Outcome, table: dict[str, Any], name: str) -> list[bytes]:
            sent.extend(SERDE.decode(s.value)[1] for s in outcome.sends if s.output == "dead-letters")
            return original(outcome, table, name)

        p.perform = perform  # type: ignore[method-assign]
        p.feed("event", event("e1", T0, install_id="d1"))
        assert [(d["message_id"], d["step"], d["reason"], d["message"]) for d in sent] == [
            ("e1", "person", "internal_error", "KeyError: 'sess'")
        ]

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


def _routed_envelope(p: Pipeline, record_type: str, record: dict[str, Any]) -> bytes:
    """What stage 1 routes for ``record`` (state of the identity table applied)."""
    p.offset += 1
    source = SourcePosition("enricher.identity", 0, p.offset, b"k", SERDE.encode(record_type, record))
    outcome = p.stages.identity(p.identity, source)
    p.identity.update(outcome.writes)
    return outcome.sends[-1].value


class TestCrashBetweenStateAndOutputs:
    """The state write reached its changelog, the outputs did not: the replay must send them."""

    def test_the_replay_of_the_applied_position_sends_the_same_outputs_and_writes_nothing(self):
        p = Pipeline()
        p.feed("event", event("e1", T0, install_id="d1"))
        value = _routed_envelope(p, "event", event("e2", T0 + 3_600_000, install_id="d1"))
        source = SourcePosition("routed", 0, 500, b"p", value)
        first = p.stages.person(p.persons, source)
        p.persons.update(first.writes)  # the crash: the state is kept, the sends are lost
        assert p.stages.person(p.persons, source).read_back == 0  # first: what is on enriched?
        p.stages.produced[0] = set()  # nothing of it
        replay = p.stages.person(p.persons, source)
        assert replay.writes == {}
        assert [s.value for s in replay.sends] == [s.value for s in first.sends]
        kinds = [SERDE.decode(s.value)[1].get("kind") for s in replay.sends if s.output == "enriched"]
        assert kinds == ["session_end", "session_start", "event"]
        profile = SERDE.decode(replay.sends[-1].value)[1]
        assert profile["session_count"] == 2  # the effect is in the state once, not re-applied

    def test_a_copy_at_another_position_is_skipped(self):
        """An ingest or hop duplicate arrives at a new offset: its outputs already went out."""
        p = Pipeline()
        value = _routed_envelope(p, "tag_hit", tag("t1", T0, "vip", install_id="d1"))
        first = p.stages.person(p.persons, SourcePosition("routed", 0, 7, b"p", value))
        p.persons.update(first.writes)
        copy = p.stages.person(p.persons, SourcePosition("routed", 0, 8, b"p", value))
        assert copy.sends == [] and copy.writes == {}

    def test_a_merge_hand_over_is_sent_again_after_a_crash(self):
        """The anonymous person marked itself merged but its absorb never left: the replay sends it."""
        p = Pipeline()
        p.feed("event", event("e1", T0, "personalize", install_id="d1", external_user_id="u1"))
        p.feed("tag_hit", tag("t1", T0 + 1, "browsed", "shoes", install_id="d2"))
        login = SERDE.encode(
            "event", event("e2", T0 + 2, "personalize", install_id="d2", external_user_id="u1")
        )
        resolved = p.stages.identity(p.identity, SourcePosition("enricher.identity", 0, 900, b"k", login))
        merge = next(s.value for s in resolved.sends if SERDE.decode(s.value)[1]["kind"] == "merge")
        source = SourcePosition("routed", 0, 901, b"p", merge)
        first = p.stages.person(p.persons, source)
        p.persons.update(first.writes)
        p.stages.produced[0] = set()
        replay = p.stages.person(p.persons, source)
        assert [s.value for s in replay.sends] == [s.value for s in first.sends]
        assert [s.output for s in replay.sends] == ["routed", "profiles"]

    def test_outputs_found_on_enriched_are_not_sent_again(self):
        """The crash came after the outputs left: the replay sends only the current profile."""
        p = Pipeline()
        value = _routed_envelope(p, "event", event("e1", T0, install_id="d1"))
        source = SourcePosition("routed", 0, 600, b"p", value)
        first = p.stages.person(p.persons, source)
        p.persons.update(first.writes)
        p.stages.produced[0] = {("e1", "event"), ("e1:start", "session_start")}
        replay = p.stages.person(p.persons, source)
        assert [s.output for s in replay.sends] == ["profiles"]
        assert replay.sends[0].value == first.sends[-1].value

    def test_the_outbox_forgets_committed_positions(self):
        """Entries below the committed offset can never be replayed: only the live ones are kept."""
        p = Pipeline()
        for offset, name in enumerate(["a", "b", "c"]):
            value = _routed_envelope(p, "tag_hit", tag(f"t-{name}", T0 + offset, name, install_id="d1"))
            source = SourcePosition("routed", 0, offset, b"p", value)
            outcome = p.stages.person(p.persons, source, committed=2)
            p.persons.update(outcome.writes)
        (state,) = p.persons.values()
        assert [e["o"] for e in state["outbox"].values()] == [2]
        assert state["seen"] == ["t-a", "t-b", "t-c"]  # duplicates are still recognised

    def test_the_identity_stage_replays_a_window_exactly_as_it_first_resolved_it(self):
        """A tag of an anonymous device, then its login into a known person; both writes kept, both
        routings lost. The replay routes the tag to the anonymous person again and sends the merge."""
        p = Pipeline()
        p.feed("event", event("e1", T0, "personalize", install_id="d1", external_user_id="u1"))
        window = [
            SourcePosition(
                "enricher.identity",
                0,
                100,
                b"k",
                SERDE.encode("tag_hit", tag("t1", T0 + 1, "x", install_id="d2")),
            ),
            SourcePosition(
                "enricher.identity",
                0,
                101,
                b"k",
                SERDE.encode(
                    "event", event("e2", T0 + 2, "personalize", install_id="d2", external_user_id="u1")
                ),
            ),
        ]
        first = []
        for source in window:
            outcome = p.stages.identity(p.identity, source)
            p.identity.update(outcome.writes)  # the crash: the state is kept, the sends are lost
            first.append(outcome)
        replay = [p.stages.identity(p.identity, source) for source in window]
        assert [[s.value for s in o.sends] for o in replay] == [[s.value for s in o.sends] for o in first]
        kinds = [SERDE.decode(s.value)[1]["kind"] for s in replay[1].sends]
        assert kinds == ["merge", "event"]
        assert replay[1].writes == first[1].writes  # the same final values, written again

    def test_the_identity_table_keeps_a_bounded_history(self):
        """Versions below the committed offset are dropped but the newest of them (what a replay
        of the committed offset reads)."""
        p = Pipeline()
        for offset, kind in [(1, "custom"), (2, "personalize"), (3, "depersonalize"), (4, "personalize")]:
            record = event(f"e{offset}", T0 + offset, kind, install_id="d1", external_user_id="u1")
            source = SourcePosition("enricher.identity", 0, offset, b"k", SERDE.encode("event", record))
            p.identity.update(p.stages.identity(p.identity, source, committed=3).writes)
        device = p.identity["device:install_id:d1"]
        assert device["@o"] == 4 and [o for o, _ in device["@h"]] == [3, 2]  # 1 is gone


class TestHopCopies:
    def test_the_hops_copy_of_a_record_is_skipped_though_its_device_moved_since(self):
        """A crashed hop forwards again what it forwarded since its last commit: the same bytes at a
        later offset of enricher.identity, read as of that offset. Resolved, this launch would go
        to the anonymous person the logout gave the device (services/enricher/hop_copies.py)."""
        p = Pipeline()
        launch = event("e2", T0 + 1, install_id="d1")
        p.feed("event", event("e1", T0, "personalize", install_id="d1", external_user_id="u1"))
        p.feed("event", launch)
        p.feed("event", event("e3", T0 + 2, "depersonalize", install_id="d1"))
        before = (len(p.actions), dict(p.identity))

        p.feed("event", launch)

        assert (len(p.actions), p.identity) == before

    def test_a_copy_of_a_record_before_where_the_stage_resumed_is_skipped_once_read_back(self):
        """A restarted stage resumes at its committed offset, which may lie past a copy's original
        (it replayed the originals and committed before a second crash): the records read back
        from before that offset make the copy recognisable."""
        copies = HopCopies(window=100)
        original = b"launch e2"
        assert copies.needs_seed("enricher.identity", 0, 353)
        copies.seed("enricher.identity", 0, [(287, b"event e1"), (288, original), (289, b"tag e3")])
        assert not copies.needs_seed("enricher.identity", 0, 353)
        assert not copies.is_copy("enricher.identity", 0, 353, b"tag e9")
        assert copies.is_copy("enricher.identity", 0, 358, original)

    def test_without_the_read_back_the_window_starts_where_the_stage_resumed(self):
        """The same copy met by a window that starts at the resumed offset passes: this is what the
        read-back is for (a replay backwards starts the window over, so an original is never
        taken for a copy of itself)."""
        copies = HopCopies(window=100)
        assert not copies.is_copy("enricher.identity", 0, 353, b"tag e9")
        assert not copies.is_copy("enricher.identity", 0, 358, b"launch e2")
        assert copies.needs_seed("enricher.identity", 0, 300)  # a jump back: read back again
        assert not copies.is_copy("enricher.identity", 0, 300, b"launch e2")


class TestVersions:
    def test_a_busy_key_keeps_the_version_a_replay_from_the_committed_offset_reads(self):
        """Twenty writes of one key since the committed offset 10: the cap drops versions in between,
        never the floor (the newest below 10), so a replay of offset 10 still finds the key."""
        table: dict[str, Any] = {}
        table.update(versions.stamp(table, {"person:p": {"ids": {}, "devices": ["d0"]}}, 5, None))
        for offset in range(11, 31):
            write = {"person:p": {"ids": {}, "devices": [f"d{offset}"]}}
            table.update(versions.stamp(table, write, offset, 10))
        kept = [o for o, _ in versions.versions(table["person:p"])]
        assert len(kept) == versions.MAX_VERSIONS and kept[0] == 30 and kept[-1] == 5
        assert versions.AsOf(table, 10).get("person:p") == {"ids": {}, "devices": ["d0"]}
        assert versions.AsOf(table, 31).get("person:p") == {"ids": {}, "devices": ["d30"]}
