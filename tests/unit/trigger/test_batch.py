"""A batch's decisions see each other before any of them is written (services/trigger/batch.py)."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.serde import Serde
from services.trigger.batch import Batch, Overlay
from services.trigger.stages import Outcome, Send, Stages
from services.trigger.state import to_ms
from tests.unit.trigger.build import T0, at, context
from tests.unit.trigger.test_stages import enriched_bytes, profile_bytes, source

CAPPED = """
campaigns:
  - id: promo
    trigger: {kind: event, name: signup}
    caps: [{max: 1, window: 1h}]
    reentry: {mode: always}
    channels: {order: [email]}
    templates:
      email: {subject: "Hi", text: "x"}
"""


def stages(yaml_text: str = CAPPED) -> Stages:
    ctx = context(yaml_text)
    return Stages(Serde(), lambda: ctx, {n: f"t-{n}" for n in ("outbound.email", "delivery-receipts")})


def tables() -> dict[str, dict[str, Any]]:
    return {"persons": {}, "states": {}, "broadcasts": {}}


def outbound(batch: Batch[Any]) -> list[Send]:
    return [send for send in batch.sends if send.output == "outbound.email"]


class TestCapsInsideOneBatch:
    def test_two_qualifying_events_of_one_person_in_one_batch_send_one_message(self):
        """A cap of 1 per hour: the second event of the batch sees the first one's send, though no
        state is written yet, so the batch has one message and the written state counts it."""
        written, s = tables(), stages()
        batch: Batch[str] = Batch(written)
        batch.add(
            "profile", s.profile(batch.persons, batch.states, source(profile_bytes(), "profiles"), at(0))
        )
        for n, mid in enumerate(("e1", "e2")):
            event = source(enriched_bytes(mid, "signup", at(1 + n)), offset=n + 1)
            batch.add(mid, s.enriched(batch.persons, batch.states, event, at(1 + n)))
        assert len(outbound(batch)) == 1
        assert written["states"] == {}, "nothing is written before the batch is performed"
        for _, table, key, value in batch.writes():
            written[table][key] = value
        # The written state knows the message: a later batch's event is capped as well.
        later: Batch[str] = Batch(written)
        later.add(
            "e3",
            s.enriched(later.persons, later.states, source(enriched_bytes("e3", "signup", at(3))), at(3)),
        )
        assert outbound(later) == []

    def test_each_decision_alone_against_the_unwritten_tables_would_send_twice(self):
        """The control: deciding both events against the tables without the overlay breaks the cap."""
        written, s = tables(), stages()
        profile = s.profile(written["persons"], written["states"], source(profile_bytes(), "profiles"), at(0))
        written["persons"].update({k: v for t, k, v in profile.writes if t == "persons"})
        sends = []
        for n, mid in enumerate(("e1", "e2")):
            event = source(enriched_bytes(mid, "signup", at(1 + n)), offset=n + 1)
            sends += s.enriched(written["persons"], written["states"], event, at(1 + n)).sends
        assert len([x for x in sends if x.output == "outbound.email"]) == 2

    def test_a_replayed_input_inside_the_batch_is_skipped(self):
        """The same input twice in one batch (a replay read with it): the second changes nothing."""
        written, s = tables(), stages(CAPPED.replace("caps: [{max: 1, window: 1h}]", "caps: []"))
        batch: Batch[str] = Batch(written)
        batch.add(
            "profile", s.profile(batch.persons, batch.states, source(profile_bytes(), "profiles"), at(0))
        )
        for _ in range(2):
            batch.add(
                "e1", s.enriched(batch.persons, batch.states, source(enriched_bytes("e1", "signup")), at(1))
            )
        assert len(outbound(batch)) == 1


class TestWrites:
    def test_a_key_written_twice_is_written_once_with_its_last_value_in_the_order_of_the_last(self):
        """Fewer changelog records, same table: the earlier value would be overwritten anyway."""
        batch: Batch[str] = Batch(tables())
        batch.add("i1", Outcome(writes=[("states", "a", 1), ("states", "b", 1)], due={"a": 5}))
        batch.add("i2", Outcome(writes=[("states", "a", 2)], due={"a": None}))
        assert list(batch.writes()) == [("i1", "states", "b", 1), ("i2", "states", "a", 2)]
        assert list(batch.due()) == [("i2", "a", None)]
        assert batch.inputs == 2 and batch

    def test_sends_keep_decision_order(self):
        first, second = Send("dead-letters", b"a", b"1"), Send("outbound.email", b"b", b"2", "m")
        batch: Batch[str] = Batch(tables())
        batch.add("i1", Outcome(sends=[first]))
        batch.add("i2", Outcome(sends=[second]))
        assert batch.sends == [first, second]

    def test_an_empty_batch_has_nothing_to_perform(self):
        batch: Batch[str] = Batch(tables())
        batch.add("i1", Outcome())
        assert not batch and batch.inputs == 1


class TestOverlay:
    def test_pending_values_hide_the_tables_and_missing_keys_fall_through(self):
        overlay = Overlay({"a": 2}, {"a": 1, "b": 1})
        assert (overlay["a"], overlay["b"], overlay.get("c"), overlay.get("c", 0)) == (2, 1, None, 0)
        assert sorted(overlay) == ["a", "b"] and len(overlay) == 2
        with pytest.raises(KeyError):
            overlay["c"]

    def test_a_due_time_is_the_one_of_the_last_decision(self):
        """A person's cart reminder scheduled and then a later input's: the index gets the last."""
        batch: Batch[str] = Batch(tables())
        batch.add("i1", Outcome(due={"p-1": to_ms(T0)}))
        batch.add("i2", Outcome(due={"p-2": None}))
        batch.add("i3", Outcome(due={"p-1": to_ms(at(5))}))
        assert list(batch.due()) == [("i2", "p-2", None), ("i3", "p-1", to_ms(at(5)))]
