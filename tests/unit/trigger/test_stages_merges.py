"""Merge hand-overs through `trigger.merges` with dict tables: the survivor's partition asks, the
merged-away person's partition hands over and keeps a marker, the survivor's partition folds;
replays change nothing, later events of the merged-away person are the survivor's."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.common.steps import SourcePosition
from services.trigger.message import message_id
from services.trigger.stages import Outcome, Send, Stages, tick_value
from services.trigger.state import to_ms
from tests.enricher_records import event
from tests.unit.trigger.build import T0, at, context
from tests.unit.trigger.test_stages import CAMPAIGNS, SERDE, TOPICS, Tables

ANON, SAM = ("p-anon", 0), ("p-sam", 2)  # (person, partition): different partitions


def stages(profile_wait_ms: int = 0) -> Stages:
    ctx = context(CAMPAIGNS)
    return Stages(SERDE, lambda: ctx, TOPICS, profile_wait_ms)


def at_partition(who: tuple[str, int], topic: str, value: bytes, offset: int = 0) -> SourcePosition:
    return SourcePosition(topic, who[1], offset, who[0].encode(), value)


def profile(s: Stages, tables: Tables, who: tuple[str, int], email: str, name: str, when: Any = T0) -> None:
    record = {
        "person_id": who[0],
        "updated_time": to_ms(when),
        "email": email,
        "subscriptions": ["email"],
        "attributes": [{"name": "first_name", "type": "string", "value": name, "scope": "person", "time": 0}],
    }
    value = SERDE.encode("profile", record)
    tables.apply(s.profile(tables.persons, tables.states, at_partition(who, "profiles", value), at(0)))


def envelope(
    who: tuple[str, int], mid: str, kind: str, name: str = "", when: Any = T0, **details: str
) -> bytes:
    original = (
        SERDE.encode("event", event(mid, to_ms(when), "custom", name, external_user_id="u1"))
        if kind == "event"
        else None
    )
    env = {
        "message_id": mid,
        "person_id": who[0],
        "device_id": None,
        "event_time": to_ms(when),
        "kind": kind,
        "record_type": "event" if original else None,
        "original": original,
        "details": details,
    }
    return SERDE.encode("enriched_event", env)


def enriched(
    s: Stages, tables: Tables, who: tuple[str, int], value: bytes, now: Any, offset: int = 0
) -> Outcome:
    return tables.apply(
        s.enriched(tables.persons, tables.states, at_partition(who, "enriched", value, offset), now)
    )


def hand(s: Stages, tables: Tables, send: Send, partition: int, now: Any) -> Outcome:
    """Deliver one `trigger.merges` send to the partition its key belongs to."""
    assert send.output == "trigger.merges" and send.key is not None
    source = SourcePosition("trigger.merges", partition, 0, send.key, send.value)
    return tables.apply(s.handover(tables.persons, tables.states, source, now))


def merges(outcome: Outcome) -> list[tuple[str, str]]:
    """(key, step) of the outcome's `trigger.merges` sends."""
    return [(x.key.decode(), json.loads(x.value)["t"]) for x in outcome.sends if x.output == "trigger.merges"]


def emails(outcome: Outcome) -> list[dict[str, Any]]:
    return [SERDE.decode(x.value)[1] for x in outcome.sends if x.output == "outbound.email"]


def tick(s: Stages, tables: Tables, who: tuple[str, int], now: Any) -> Outcome:
    source = at_partition(who, "ticks", tick_value("due", 0))
    return tables.apply(s.tick_person(who[0], tables.persons, tables.states, source, now))


def merged_with_pending_reminder(s: Stages, tables: Tables) -> tuple[Send, Send]:
    """anon has a cart reminder due at +60 min; the login merges anon into sam. Returns the
    request and the fold that crossed partitions."""
    profile(s, tables, ANON, "anon@example.com", "Anon")
    profile(s, tables, SAM, "sam@example.com", "Sam")
    enriched(s, tables, ANON, envelope(ANON, "ev-cart", "event", "cart"), at(1))
    merge = enriched(s, tables, SAM, envelope(SAM, "login", "merge", merged_from="p-anon"), at(2))
    assert merges(merge) == [("p-anon", "request")] and merge.writes == []
    handed = hand(s, tables, merge.sends[0], ANON[1], at(3))
    assert merges(handed) == [("p-sam", "fold")]
    assert tables.states["p-anon"] == {"person": "p-anon", "partition": 0, "x": "p-sam", "due": None}
    assert handed.due == {"p-anon": None}
    folded = hand(s, tables, handed.sends[0], SAM[1], at(4))
    assert folded.sends == [] and folded.due == {"p-sam": to_ms(at(60))}
    assert tables.states["p-sam"]["partition"] == SAM[1]
    return merge.sends[0], handed.sends[0]


def test_a_pending_send_of_the_merged_person_goes_once_to_the_survivor():
    """The reminder goes at its due time to sam (key, address, id), once; nothing for anon."""
    tables, s = Tables(), stages()
    merged_with_pending_reminder(s, tables)
    assert emails(tick(s, tables, SAM, at(59))) == []
    sent = tick(s, tables, SAM, at(60))
    [email] = emails(sent)
    assert email["person_id"] == "p-sam" and email["destination"] == "sam@example.com"
    assert email["message_id"] == message_id("reminder", "p-sam", "ev-cart", "", "email", "")
    assert [x.key for x in sent.sends if x.output == "outbound.email"] == [b"p-sam"]
    assert emails(tick(s, tables, SAM, at(61))) == []
    assert tick(s, tables, ANON, at(61)).sends == []
    assert tables.states["p-anon"]["x"] == "p-sam"  # a tick of the marker writes nothing


def test_replayed_merge_request_and_fold_change_nothing():
    """A copy of the merge asks again; the marker answers; a fold read again is recognised."""
    tables, s = Tables(), stages()
    request, fold = merged_with_pending_reminder(s, tables)
    again = enriched(s, tables, SAM, envelope(SAM, "login", "merge", merged_from="p-anon"), at(5))
    assert merges(again) == [("p-anon", "request")]
    replayed = hand(s, tables, request, ANON[1], at(5))
    assert replayed.sends == [] and replayed.writes == []
    before = dict(tables.states["p-sam"])
    refolded = hand(s, tables, fold, SAM[1], at(5))
    assert refolded.sends == [] and refolded.writes == [] and tables.states["p-sam"] == before


def test_a_fold_sent_again_with_more_after_a_crash_brings_the_rest():
    """anon's instance sends the fold, then dies before writing its marker. Its replay applies a
    later cart of anon's before the request this time (the topics' order differs between runs),
    so the same fold is sent again with a second pending reminder. Sam folds in that reminder
    only: both reminders go to sam, each once."""
    tables, s = Tables(), stages()
    profile(s, tables, ANON, "anon@example.com", "Anon")
    profile(s, tables, SAM, "sam@example.com", "Sam")
    enriched(s, tables, ANON, envelope(ANON, "ev-cart", "event", "cart"), at(1))
    merge = enriched(s, tables, SAM, envelope(SAM, "login", "merge", merged_from="p-anon"), at(2))
    before_crash = dict(tables.states["p-anon"])
    first = hand(s, tables, merge.sends[0], ANON[1], at(3)).sends[0]
    tables.states["p-anon"] = before_crash  # the marker never reached the changelog
    hand(s, tables, first, SAM[1], at(4))
    enriched(s, tables, ANON, envelope(ANON, "ev-cart-2", "event", "cart", at(5)), at(5), offset=7)
    again = hand(s, tables, merge.sends[0], ANON[1], at(6)).sends[0]
    assert json.loads(again.value)["id"] == json.loads(first.value)["id"]
    hand(s, tables, again, SAM[1], at(7))
    hand(s, tables, again, SAM[1], at(8))  # and read once more: nothing new
    sent = [tick(s, tables, SAM, at(minute)) for minute in (60, 65, 66)]
    reminders = [e["trigger_event_id"] for outcome in sent for e in emails(outcome)]
    assert reminders == ["ev-cart", "ev-cart-2"]
    assert all(e["person_id"] == "p-sam" for outcome in sent for e in emails(outcome))


def test_events_of_the_merged_person_read_later_are_the_survivors():
    """anon's partition lags: its signup read after the hand-over is forwarded and welcomes sam;
    the same signup read again (a replay) is skipped at sam's."""
    tables, s = Tables(), stages()
    merged_with_pending_reminder(s, tables)
    late = enriched(s, tables, ANON, envelope(ANON, "ev-signup", "event", "signup"), at(6), offset=9)
    assert merges(late) == [("p-sam", "event")] and late.writes == []
    [email] = emails(hand(s, tables, late.sends[0], SAM[1], at(6)))
    assert email["person_id"] == "p-sam" and email["trigger_event_id"] == "ev-signup"
    assert email["content"]["subject"] == "Hi Sam"
    assert hand(s, tables, late.sends[0], SAM[1], at(7)).sends == []


def test_an_input_the_merged_person_applied_is_not_applied_again_under_the_survivor():
    """The enricher re-sends one of anon's events under sam after its crash: sam knows anon's ids."""
    tables, s = Tables(), stages()
    profile(s, tables, ANON, "anon@example.com", "Anon")
    profile(s, tables, SAM, "sam@example.com", "Sam")
    assert emails(enriched(s, tables, ANON, envelope(ANON, "ev-s", "event", "signup"), at(1)))
    merge = enriched(s, tables, SAM, envelope(SAM, "login", "merge", merged_from="p-anon"), at(2))
    hand(s, tables, hand(s, tables, merge.sends[0], ANON[1], at(3)).sends[0], SAM[1], at(4))
    assert enriched(s, tables, SAM, envelope(SAM, "ev-s", "event", "signup"), at(5)).sends == []


def test_a_fold_reaching_a_person_merged_on_in_turn_is_passed_along():
    """anon into sam, then sam into tom: anon's reminder ends up with tom."""
    tables, s = Tables(), stages()
    tom = ("p-tom", 4)
    profile(s, tables, ANON, "anon@example.com", "Anon")
    profile(s, tables, tom, "tom@example.com", "Tom")
    enriched(s, tables, ANON, envelope(ANON, "ev-cart", "event", "cart"), at(1))
    # sam is merged into tom first (sam had nothing: the marker alone), then anon into sam.
    first = enriched(s, tables, tom, envelope(tom, "login-1", "merge", merged_from="p-sam"), at(2))
    assert hand(s, tables, first.sends[0], SAM[1], at(2)).sends == []
    merge = enriched(s, tables, SAM, envelope(SAM, "login-2", "merge", merged_from="p-anon"), at(3))
    fold = hand(s, tables, merge.sends[0], ANON[1], at(3)).sends[0]
    passed = hand(s, tables, fold, SAM[1], at(3))
    assert merges(passed) == [("p-tom", "fold")] and passed.writes == []
    hand(s, tables, passed.sends[0], tom[1], at(3))
    [email] = emails(tick(s, tables, tom, at(60)))
    assert email["person_id"] == "p-tom" and email["destination"] == "tom@example.com"


def test_an_event_waiting_for_the_merged_persons_profile_waits_for_the_survivors():
    """anon's signup arrived before any profile; after the hand-over sam's profile releases it."""
    tables, s = Tables(), stages(profile_wait_ms=2000)
    parked = enriched(s, tables, ANON, envelope(ANON, "ev-s", "event", "signup", at(1)), at(1))
    assert parked.sends == [] and tables.states["p-anon"]["parked"]
    merge = enriched(s, tables, SAM, envelope(SAM, "login", "merge", merged_from="p-anon"), at(2))
    folded = hand(s, tables, hand(s, tables, merge.sends[0], ANON[1], at(2)).sends[0], SAM[1], at(2))
    assert folded.due == {"p-sam": to_ms(at(1)) + 2000}
    assert [p["partition"] for p in tables.states["p-sam"]["parked"]] == [SAM[1]]
    record = {
        "person_id": "p-sam",
        "updated_time": to_ms(at(2)),
        "email": "sam@example.com",
        "subscriptions": ["email"],
        "attributes": [
            {"name": "first_name", "type": "string", "value": "Sam", "scope": "person", "time": 0}
        ],
    }
    source = at_partition(SAM, "profiles", SERDE.encode("profile", record))
    released = tables.apply(s.profile(tables.persons, tables.states, source, at(2)))
    [email] = emails(released)
    assert email["person_id"] == "p-sam" and email["trigger_event_id"] == "ev-s"
    assert tables.states["p-sam"]["partition"] == SAM[1] and tables.states["p-sam"]["parked"] == []


@pytest.mark.parametrize(
    "value",
    [b"{", b"[1]", b'{"t": "shrug"}', b'{"t": "request", "from": "p-anon"}', b'{"t": "fold", "into": "x"}'],
)
def test_a_bad_hand_over_record_is_a_dead_letter(value: bytes):
    """Not JSON, an unknown step or a step without its fields: a dead letter, nothing else."""
    tables, s = Tables(), stages()
    source = SourcePosition("trigger.merges", 1, 3, b"p-anon", value)
    outcome = s.handover(tables.persons, tables.states, source, at(0))
    assert [x.output for x in outcome.sends] == ["dead-letters"] and outcome.writes == []
    _, letter = SERDE.decode(outcome.sends[0].value)
    assert letter["reason"] == "undecodable" and letter["step"] == "handover"
