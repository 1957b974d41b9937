"""The record path with dict tables and a fake clock: changes out, rows written, replays skipped,
timers on ticks, restore after a restart, reloads, dead letters."""

from __future__ import annotations

from typing import Any

from services.common.steps import SourcePosition
from services.segmenter.definitions import Segment, parse
from services.segmenter.seed import from_state
from services.segmenter.stream import DEFINITIONS_KEY, Outcome, Segmenter
from tests import segmenter_records as sr
from tests.enricher_records import T0

TOPICS = {"segment-membership": "segment-membership", "dead-letters": "dead-letters"}


def segments(*docs: dict[str, Any]) -> dict[str, Segment]:
    return {s.id: s for s in parse({"segments": list(docs)})}


BUYERS = {"id": "buyers", "condition": {"event": "purchase", "within": "5s"}}
VIP = {"id": "vip", "condition": {"tag": "vip"}}


def change_of(value: bytes) -> tuple[str, str, str, str]:
    """A produced record as (person, segment, change, reason), or a dead letter's reason."""
    record_type, record = sr.SERDE.decode(value)
    if record_type == "segment_membership":
        return (record["person_id"], record["segment_id"], record["change"], record["reason"])
    return ("dead-letter", record["reason"], "", "")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class Harness:
    def __init__(self, defs: dict[str, Segment], table: dict[str, Any] | None = None) -> None:
        self.clock = Clock()
        self.table: dict[str, Any] = {} if table is None else table
        self.core = Segmenter(sr.SERDE, TOPICS, defs, from_state, self.clock)
        self.offset = 0

    def perform(self, out: Outcome) -> list[tuple[str, str, str, str]]:
        self.table.update(out.writes)
        return [change_of(send.value) for send in out.sends]

    def send(self, env: dict[str, Any], offset: int | None = None) -> list[tuple[str, str, str, str]]:
        if offset is None:
            self.offset += 1
            offset = self.offset
        source = SourcePosition("enriched", 0, offset, env["person_id"].encode(), sr.encode(env))
        return self.perform(self.core.record(self.table, source))

    def tick(self) -> list[tuple[str, str, str, str]]:
        return self.perform(self.core.tick(self.table, 0))


class TestSegmenter:
    def test_facts_enter_and_rows_hold_state_members_and_offset(self) -> None:
        """A purchase enters `buyers`; the person's row holds the state, members and the offset."""
        h = Harness(segments(BUYERS, VIP))
        assert h.send(sr.event("p1", T0, "purchase")) == [("p1", "buyers", "entered", "event:purchase")]
        row = h.table["p1"]
        assert (row["p"], row["o"], row["m"]) == (0, 1, ["buyers"])
        assert h.table[f"{DEFINITIONS_KEY}0"]["p"] == 0

    def test_a_replayed_record_is_skipped(self) -> None:
        """A record at or below the stored offset (a replay after a crash) changes nothing."""
        h = Harness(segments(BUYERS))
        h.send(sr.event("p1", T0, "purchase"), offset=7)
        state = h.table["p1"]["s"]
        assert h.send(sr.event("p1", T0, "purchase"), offset=7) == []
        assert h.table["p1"]["s"] == state

    def test_a_copy_of_an_applied_record_at_a_new_offset_counts_once(self) -> None:
        """The enricher re-sends a replayed record after its crash: same message id and kind at a
        later offset. Counting it twice would put the person in a 'twice' segment."""
        h = Harness(
            segments({"id": "twice", "condition": {"event": "purchase", "within": "1h", "at_least": 2}})
        )
        h.clock.now = T0 + 1000  # both purchases in the past
        purchase = sr.event("p1", T0, "purchase", mid="order-1")
        assert h.send(purchase, offset=3) == []
        assert h.send(purchase, offset=9) == []  # the copy
        assert h.send(sr.event("p1", T0 + 1, "purchase", mid="order-2"), offset=10) == [
            ("p1", "twice", "entered", "event:purchase")
        ]
        assert h.table["p1"]["r"] == ["order-1|event", "order-2|event"]

    def test_ticks_fire_window_exits_at_the_window_end(self) -> None:
        """With no further facts, a tick after the 5 s window ends the membership (reason timer)."""
        h = Harness(segments(BUYERS))
        h.send(sr.event("p1", T0, "purchase"))
        h.clock.now = T0 + 5_000
        assert h.tick() == []
        h.clock.now = T0 + 5_001
        assert h.tick() == [("p1", "buyers", "exited", "timer")]
        assert h.table["p1"]["m"] == []

    def test_a_new_instance_restores_members_and_timers_from_the_table(self) -> None:
        """After a restart, members are not re-entered and a pending window exit still fires."""
        h = Harness(segments(BUYERS, VIP))
        h.send(sr.event("p1", T0, "purchase"))
        h.send(sr.tag("p2", T0, "vip"))
        again = Harness(segments(BUYERS, VIP), table=h.table)
        again.offset = h.offset
        again.clock.now = T0 + 1_000
        assert again.send(sr.tag("p2", T0 + 1_000, "vip")) == []
        again.clock.now = T0 + 6_000
        assert again.tick() == [("p1", "buyers", "exited", "timer")]

    def test_reload_adds_a_segment_and_removes_one(self) -> None:
        """New definitions apply on the next tick: added ones get members, removed ones exit theirs."""
        h = Harness(segments(VIP))
        h.send(sr.tag("p1", T0, "vip"))
        h.send(sr.event("p2", T0, "purchase"))
        h.core.set_definitions(segments({"id": "vip2", "condition": {"tag": "vip"}}))
        assert sorted(h.tick()) == [
            ("p1", "vip", "exited", "definition"),
            ("p1", "vip2", "entered", "definition"),
        ]
        assert h.table[f"{DEFINITIONS_KEY}0"]["segments"][0]["id"] == "vip2"

    def test_restart_under_changed_definitions_reloads_from_the_saved_ones(self) -> None:
        """The definitions a partition was built for are in the table; new ones apply as a reload."""
        h = Harness(segments(VIP))
        h.send(sr.tag("p1", T0, "vip"))
        again = Harness(segments(VIP, {"id": "vip-too", "condition": {"tag": "vip"}}), table=h.table)
        assert again.tick() == [("p1", "vip-too", "entered", "definition")]

    def test_bad_records_become_dead_letters_and_the_stream_goes_on(self) -> None:
        """Bytes that are not Avro and envelopes without their original are refused with a reason."""
        h = Harness(segments(VIP))
        bad = SourcePosition("enriched", 0, 1, b"k", b"not avro")
        assert h.perform(h.core.record(h.table, bad)) == [("dead-letter", "undecodable", "", "")]
        assert h.send({**sr.tag("p1", T0, "vip"), "original": None}) == [
            ("dead-letter", "missing_original", "", "")
        ]
        assert h.send(sr.tag("p1", T0, "vip")) == [("p1", "vip", "entered", "tag:vip")]
