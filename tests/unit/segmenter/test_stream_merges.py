"""Merges on the record path, with two instances (partition 0 and partition 1, each with its own
dict table) and the `segmenter.merges` topic between them as a queue: the merged-away person's
memberships end on its own partition, its facts count for the survivor on the survivor's, and
replays, late facts, chains and restarts change nothing they should not."""

from __future__ import annotations

import json
from typing import Any

from services.common.steps import SourcePosition
from services.segmenter.definitions import Segment
from services.segmenter.facts import PersonState
from services.segmenter.seed import from_state
from services.segmenter.stream import Outcome, Segmenter
from tests import segmenter_records as sr
from tests.enricher_records import T0
from tests.unit.segmenter.test_stream import TOPICS, Clock, change_of, segments

TOPICS = {**TOPICS, "segmenter.merges": "segmenter.merges"}
BUYERS = {"id": "buyers", "condition": {"event": "purchase"}}
TWICE = {"id": "twice", "condition": {"event": "purchase", "at_least": 2}}
VIP = {"id": "vip", "condition": {"tag": "vip"}}
NEWCOMERS = {"id": "newcomers", "condition": {"not": {"event": "purchase"}}}  # true for the unknown
Change = tuple[str, str, str, str]


class Cluster:
    """Partition p of `enriched`, `segmenter.merges` and the table lives on instance p."""

    def __init__(self, defs: dict[str, Segment], where: dict[str, int]) -> None:
        self.clock = Clock()
        self.where = where  # person → partition (the producers' partitioner)
        self.tables: list[dict[str, Any]] = [{}, {}]
        self.cores = [Segmenter(sr.SERDE, TOPICS, defs, from_state, self.clock) for _ in range(2)]
        self.offsets = [0, 0]
        self.queue: list[tuple[int, bytes, bytes]] = []  # segmenter.merges: (partition, key, value)
        self.merges_offset = 0
        self.delivered: list[tuple[int, bytes, bytes]] = []  # what deliver(keep=True) handled

    def perform(self, out: Outcome, p: int) -> list[Change]:
        self.tables[p].update(out.writes)
        changes = []
        for send in out.sends:
            if send.output == "segmenter.merges":
                assert send.key is not None
                self.queue.append((self.where[send.key.decode()], send.key, send.value))
                continue
            changes.append(change_of(send.value))
        return changes

    def send(self, env: dict[str, Any], offset: int | None = None) -> list[Change]:
        p = self.where[env["person_id"]]
        if offset is None:
            self.offsets[p] += 1
            offset = self.offsets[p]
        source = SourcePosition("enriched", p, offset, env["person_id"].encode(), sr.encode(env))
        return self.perform(self.cores[p].record(self.tables[p], source), p)

    def deliver(self, keep: bool = False) -> list[Change]:
        """Process every queued hand-over message (and those they send) in order."""
        changes: list[Change] = []
        while self.queue:
            p, key, value = self.queue.pop(0)
            changes += self.handle(p, key, value)
            if keep:
                self.delivered.append((p, key, value))
        return changes

    def handle(self, p: int, key: bytes, value: bytes) -> list[Change]:
        self.merges_offset += 1
        source = SourcePosition("segmenter.merges", p, self.merges_offset, key, value)
        return self.perform(self.cores[p].handover(self.tables[p], source), p)

    def state(self, person: str) -> PersonState:
        return PersonState.from_bytes(self.tables[self.where[person]][person]["s"].encode())


def merge(survivor: str, merged: str, mid: str = "login-1") -> dict[str, Any]:
    return sr.envelope("merge", survivor, T0 + 500, None, mid, merged_from=merged)


WHERE = {"anon": 0, "anon2": 0, "user": 1, "main": 0}


class TestMergeHandOver:
    def test_memberships_move_from_the_merged_away_person_to_the_survivor(self) -> None:
        c = Cluster(segments(BUYERS, VIP, NEWCOMERS), WHERE)
        c.clock.now = T0 + 1000
        assert sorted(c.send(sr.event("anon", T0, "purchase"))) == [
            ("anon", "buyers", "entered", "event:purchase")
        ]
        assert sorted(c.send(sr.tag("user", T0 + 1, "vip"))) == [
            ("user", "newcomers", "entered", "tag:vip"),
            ("user", "vip", "entered", "tag:vip"),
        ]
        assert c.send(merge("user", "anon")) == []  # the survivor's partition asks the other one
        assert [json.loads(v)["t"] for _, _, v in c.queue] == ["request"]
        assert sorted(c.deliver()) == [
            ("anon", "buyers", "exited", "merge"),
            ("user", "buyers", "entered", "merge"),
            ("user", "newcomers", "exited", "merge"),
        ]
        assert c.tables[0]["anon"]["x"] == "user" and c.tables[0]["anon"]["m"] == []
        assert c.tables[1]["user"]["m"] == ["buyers", "vip"]

    def test_replayed_merges_requests_and_folds_count_once(self) -> None:
        """A merge read again (a replay after a crash, or the enricher's copy) asks again; the
        repeated request sends the exits and the fold again (they may have been lost with the
        producer's buffer), and the survivor drops the fold it already has."""
        c = Cluster(segments(BUYERS, TWICE), WHERE)
        c.clock.now = T0 + 1000
        c.send(sr.event("anon", T0, "purchase", mid="o1"))
        c.send(sr.event("user", T0 + 1, "other", mid="o2"))
        c.send(merge("user", "anon"), offset=5)
        assert sorted(c.deliver(keep=True)) == [
            ("anon", "buyers", "exited", "merge"),
            ("user", "buyers", "entered", "merge"),
        ]
        assert c.tables[0]["anon"]["h"]["m"] == ["buyers"]
        c.send(merge("user", "anon"), offset=5)  # replay
        c.send(merge("user", "anon"), offset=9)  # the enricher's copy: same message id
        assert [json.loads(v)["t"] for _, _, v in c.queue] == ["request", "request"]
        assert c.deliver() == [("anon", "buyers", "exited", "merge")] * 2  # sent again, same state
        for p, key, value in c.delivered:  # the request and the fold read again after a crash
            resent = c.handle(p, key, value)
            assert resent in ([], [("anon", "buyers", "exited", "merge")])
        c.deliver()
        assert "twice" not in c.tables[1]["user"]["m"]  # anon's purchase counted once
        assert c.cores[1].counts["buyers"] == 1 and c.cores[0].counts["buyers"] == 0

    def test_one_login_merging_two_persons_hands_both_over(self) -> None:
        """Both merge envelopes carry the login's message id: they are not copies of each other."""
        c = Cluster(segments(TWICE), WHERE)
        c.clock.now = T0 + 1000
        c.send(sr.event("anon", T0, "purchase", mid="o1"))
        c.send(sr.event("anon2", T0 + 2, "purchase", mid="o2"))
        c.send(merge("user", "anon"))
        c.send(merge("user", "anon2"))
        assert c.deliver() == [("user", "twice", "entered", "merge")]

    def test_facts_read_after_the_hand_over_follow_the_survivor(self) -> None:
        """The merged-away person's partition lagged: a purchase of its own read after the
        hand-over counts for the survivor (once, also when the enricher re-sends it)."""
        c = Cluster(segments(BUYERS, TWICE), WHERE)
        c.clock.now = T0 + 1000
        c.send(sr.event("user", T0, "purchase", mid="o1"))
        c.send(merge("user", "anon"))
        assert c.deliver() == []  # anon unknown yet: nothing to hand over, a marker stays
        assert c.tables[0]["anon"]["x"] == "user"
        late = sr.event("anon", T0 - 5, "purchase", mid="o0")
        assert c.send(late) == []  # no membership for the merged-away person
        assert c.deliver() == [("user", "twice", "entered", "merge")]
        assert c.send(late) == []  # the enricher's copy at a new offset
        assert c.queue == []
        assert "anon" not in c.cores[0].engines[0].states

    def test_a_chain_reaches_the_last_survivor(self) -> None:
        """anon → user, then user → main: anon's state reaching user after user's own hand-over
        is passed on to main."""
        c = Cluster(segments(TWICE), WHERE)
        c.clock.now = T0 + 1000
        c.send(sr.event("anon", T0, "purchase", mid="o1"))
        c.send(sr.event("main", T0 + 1, "purchase", mid="o2"))
        c.send(merge("user", "anon"))
        c.send(merge("main", "user", mid="login-2"))
        # user's request is handled before anon's fold reaches user (user was never seen before)
        first = c.queue.pop(0)
        c.deliver()
        assert c.tables[1]["user"]["x"] == "main"
        assert c.handle(*first) == []  # anon's request: hands anon over to user
        assert c.deliver() == [("main", "twice", "entered", "merge")]  # user forwards it to main

    def test_a_restart_after_a_hand_over_restores_without_the_merged_away_person(self) -> None:
        c = Cluster(segments(BUYERS), WHERE)
        c.clock.now = T0 + 1000
        c.send(sr.event("anon", T0, "purchase"))
        c.send(merge("user", "anon"))
        c.deliver()
        again = Segmenter(sr.SERDE, TOPICS, segments(BUYERS), from_state, c.clock)
        assert c.perform(again.tick(c.tables[0], 0), 0) == []
        assert "anon" not in again.engines[0].states and again.counts["buyers"] == 0

    def test_an_unreadable_hand_over_is_a_dead_letter(self) -> None:
        c = Cluster(segments(BUYERS), WHERE)
        assert c.handle(0, b"anon", b"{not json") == [("dead-letter", "undecodable", "", "")]
