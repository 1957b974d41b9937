"""Folding a merged-away person's trigger state into the survivor's (merge.fold), checked through
the core's decisions: what the merged person is sent, capped and allowed to re-enter afterwards."""

from services.trigger.core import Emit, Skip, on_event, on_tick
from services.trigger.merge import fold
from services.trigger.message import message_id
from services.trigger.state import PendingSend, PersonState, SendRecord, Timer, TriggerRef, to_ms

from .build import at, context, emitted, event, person

CTX = context(
    """
    default_timezone: UTC
    channel_caps:
      sms: [{max: 1, window: 1d}]
    campaigns:
      - id: cart-reminder
        trigger: {kind: event, name: cart_updated}
        delay: 1h
        channels: {order: [email]}
        templates: {email: {subject: "Hi {{ person.first_name }}", text: "Your cart"}}
      - id: welcome
        trigger: {kind: event, name: signup}
        reentry: {mode: once}
        channels: {order: [email]}
        templates: {email: {subject: "Welcome", text: "x"}}
      - id: promo
        trigger: {kind: event, name: browse}
        channels: {order: [sms]}
        templates: {sms: {text: "Deal"}}
      - id: cart-abandoned
        trigger:
          kind: dropoff
          start: {name: cart_updated}
          complete: {name: purchase}
          within: 2h
        channels: {order: [email]}
        templates: {email: {subject: "Forgot something?", text: "x"}}
    """
)
ANON = person("p-anon", email="anon@example.com", attributes={"first_name": "Anon"})
SAM = person("p-sam", email="sam@example.com", attributes={"first_name": "Sam"})


def anon_state(*events_and_times) -> PersonState:
    state = PersonState()
    for ev, when in events_and_times:
        state = on_event(ev, ANON, state, when, CTX).state
    return state


def test_a_pending_send_goes_once_to_the_survivor_at_its_original_due_time():
    """A's delayed reminder, folded into S, goes at A's due time, to S's address, rendered for S,
    with the id S's decision gives it (deterministic); nothing is due before."""
    cart = event("cart_updated", at(0), "ev-cart", "p-anon")
    state = fold(PersonState(), anon_state((cart, at(0))))
    assert state.next_due_ms() == to_ms(at(60))
    assert emitted(on_tick(SAM, state, at(59), CTX).actions) == []
    due = on_tick(SAM, state, at(60), CTX)
    [message] = emitted(due.actions)
    assert message["person_id"] == "p-sam" and message["destination"] == "sam@example.com"
    assert message["content"]["subject"] == "Hi Sam"
    assert message["message_id"] == message_id("cart-reminder", "p-sam", "ev-cart", "", "email", "")
    assert message["trigger_event_id"] == "ev-cart"
    assert emitted(on_tick(SAM, due.state, at(61), CTX).actions) == []  # once


def test_sends_of_the_merged_person_count_against_the_survivors_caps():
    """A got the day's one SMS; after the merge S's SMS the same day is capped."""
    state = fold(PersonState(), anon_state((event("browse", at(0), "ev-b1", "p-anon"), at(0))))
    again = on_event(event("browse", at(30), "ev-b2", "p-sam"), SAM, state, at(30), CTX)
    assert [a.reason for a in again.actions if isinstance(a, Skip)] == ["frequency_cap"]


def test_once_per_person_counts_the_merged_persons_entry():
    """A signed up (welcome, once); S's signup after the merge does not enter again."""
    state = fold(PersonState(), anon_state((event("signup", at(0), "ev-s1", "p-anon"), at(0))))
    again = on_event(event("signup", at(5), "ev-s2", "p-sam"), SAM, state, at(5), CTX)
    assert [a.reason for a in again.actions if isinstance(a, Skip)] == ["reentry"]
    assert not any(isinstance(a, Emit) for a in again.actions)


def test_the_later_timer_wins_and_histories_are_unioned():
    """Per campaign the timer started by the later event; sends in time order; later entries and
    conversions; shared pending keys once (the survivor's); the inputs stay as they were."""
    ref = lambda eid, ms: TriggerRef(eid, "event", "cart_updated", ms)  # noqa: E731
    a = PersonState(
        pending={
            "k": PendingSend("cart-reminder", ref("ev-a", 5), 100),
            "ka": PendingSend("welcome", ref("a", 1), 7),
        },
        timers={"cart-abandoned": Timer(900, ref("ev-a", 20)), "x": Timer(50, ref("ev-x", 1))},
        sends=[SendRecord(10, "sms", "promo"), SendRecord(30, "email", "welcome")],
        entries={"welcome": 40, "promo": 1},
        conversions={"c": 5},
    )
    s = PersonState(
        pending={"k": PendingSend("cart-reminder", ref("ev-s", 6), 200)},
        timers={"cart-abandoned": Timer(800, ref("ev-s", 10))},
        sends=[SendRecord(20, "sms", "promo")],
        entries={"welcome": 30},
        conversions={"c": 9, "d": 1},
    )
    before = (a.to_bytes(), s.to_bytes())
    folded = fold(s, a)
    assert folded.pending == {"k": s.pending["k"], "ka": a.pending["ka"]}
    assert folded.timers == {"cart-abandoned": a.timers["cart-abandoned"], "x": a.timers["x"]}
    assert [r.time_ms for r in folded.sends] == [10, 20, 30]
    assert folded.entries == {"promo": 1, "welcome": 40}
    assert folded.conversions == {"c": 9, "d": 1}
    assert (a.to_bytes(), s.to_bytes()) == before
    assert fold(PersonState(), PersonState()) == PersonState()


def test_a_dropoff_started_by_the_merged_person_fires_for_the_survivor():
    """A put something in the cart and never bought: the check, folded into S, fires for S."""
    state = fold(PersonState(), anon_state((event("cart_updated", at(0), "ev-c", "p-anon"), at(0))))
    fired = on_tick(SAM, state, at(120), CTX)
    assert {m["campaign_id"]: m["person_id"] for m in emitted(fired.actions)} == {
        "cart-abandoned": "p-sam",
        "cart-reminder": "p-sam",
    }
