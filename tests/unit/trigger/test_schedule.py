"""Timers, delays, quiet hours in the person's timezone (DST included) and broadcast timing."""

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from services.trigger.definitions import QuietHours
from services.trigger.match import matched_campaigns
from services.trigger.schedule import (
    add_pending,
    broadcasts_due,
    due_pending,
    due_timers,
    next_allowed,
    update_timers,
)
from services.trigger.state import PersonState, to_ms

from .build import at, campaigns, event

SET = campaigns(
    """
    campaigns:
      - id: cart
        trigger:
          kind: dropoff
          start: {name: cart_updated}
          complete: {name: Order Completed}
          within: 2h
        channels: {order: [sms]}
        templates: {sms: {text: come back}}
      - id: dormant
        trigger: {kind: inactivity, after: 7d}
        channels: {order: [sms]}
        templates: {sms: {text: miss you}}
      - id: welcome
        trigger: {kind: event, name: signup}
        delay: 1h
        channels: {order: [sms]}
        templates: {sms: {text: welcome}}
      - id: outage
        trigger: {kind: broadcast, segment: s, at: "2026-11-23T13:00:00Z"}
        channels: {order: [sms]}
        templates: {sms: {text: outage}}
    """
)
NIGHT = QuietHours(start=time(21), end=time(8))
NEW_YORK, TOKYO, DUBLIN = ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo"), ZoneInfo("Europe/Dublin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class TestDropoffAndInactivityTimers:
    def test_start_schedules_a_check_at_a_plus_t(self):
        """Updating a cart schedules the cart check two hours after the update's event time."""
        state = update_timers(event("cart_updated", at(0)), SET, PersonState())
        assert state.timers["cart"].due_ms == to_ms(at(120))

    def test_completion_in_time_cancels_the_check(self):
        """A purchase within the two hours cancels the check, so nothing fires later."""
        state = update_timers(event("cart_updated", at(0)), SET, PersonState())
        state = update_timers(event("Order Completed", at(119)), SET, state)
        assert "cart" not in state.timers
        assert due_timers(state, at(500))[1] == []

    def test_late_completion_leaves_the_check_to_fire(self):
        """A purchase after the window does not cancel; the check fires with the cart event."""
        state = update_timers(event("cart_updated", at(0), event_id="cart-1"), SET, PersonState())
        state = update_timers(event("Order Completed", at(121)), SET, state)
        state, fires = due_timers(state, at(121))
        assert [(f.campaign_id, f.trigger.event_id) for f in fires] == [("cart", "cart-1")]
        assert "cart" not in state.timers

    def test_check_does_not_fire_early(self):
        """One millisecond before A+T the check is still waiting."""
        state = update_timers(event("cart_updated", at(0)), SET, PersonState())
        assert due_timers(state, at(120, milliseconds=-1))[1] == []

    def test_a_later_start_restarts_the_window(self):
        """Updating the cart again moves the check to two hours after the latest update."""
        state = update_timers(event("cart_updated", at(0)), SET, PersonState())
        state = update_timers(event("cart_updated", at(30)), SET, state)
        assert state.timers["cart"].due_ms == to_ms(at(150))

    def test_inactivity_restarts_on_each_activity(self):
        """Each event pushes the inactivity check to seven days after it; an older late event does not."""
        state = update_timers(event("app_launch", at(0)), SET, PersonState())
        state = update_timers(event("app_launch", at(days=2)), SET, state)
        state = update_timers(event("app_launch", at(days=1)), SET, state)
        assert state.timers["dormant"].due_ms == to_ms(at(days=9))


class TestDelays:
    def test_send_is_due_at_trigger_time_plus_delay(self):
        """A signup's welcome send is pending until one hour after the signup's event time."""
        fire = matched_campaigns(event("signup", at(0)), SET)[0]
        state, pending = add_pending(fire, SET.get("welcome"), PersonState())
        assert pending is not None and pending.due_ms == to_ms(at(60))
        assert due_pending(state, at(59)) == []
        assert len(due_pending(state, at(60))) == 1

    def test_the_same_trigger_is_queued_once(self):
        """Replaying the signup while its send waits does not queue a second one."""
        fire = matched_campaigns(event("signup", at(0)), SET)[0]
        state, _ = add_pending(fire, SET.get("welcome"), PersonState())
        again, pending = add_pending(fire, SET.get("welcome"), state)
        assert pending is None and len(again.pending) == 1


class TestQuietHours:
    def test_outside_quiet_hours_sends_now(self):
        """At 12:00 local time the send goes immediately."""
        assert next_allowed(utc(2026, 11, 23, 12), DUBLIN, NIGHT) == utc(2026, 11, 23, 12)

    def test_late_evening_waits_for_next_morning(self):
        """At 23:00 local the send is held until 08:00 local the next day."""
        assert next_allowed(utc(2026, 11, 23, 23), DUBLIN, NIGHT) == utc(2026, 11, 24, 8)

    def test_early_morning_waits_until_the_window_opens_the_same_day(self):
        """At 03:00 local the send is held until 08:00 that same day."""
        assert next_allowed(utc(2026, 11, 23, 3), DUBLIN, NIGHT) == utc(2026, 11, 23, 8)

    def test_the_same_instant_differs_across_timezones(self):
        """At 12:00 UTC a New Yorker (07:00) waits till 08:00 EST, a Tokyo person (21:00) till 08:00 JST."""
        noon = utc(2026, 11, 23, 12)
        assert next_allowed(noon, NEW_YORK, NIGHT) == utc(2026, 11, 23, 13)
        assert next_allowed(noon, TOKYO, NIGHT) == utc(2026, 11, 23, 23)
        assert next_allowed(noon, DUBLIN, NIGHT) == noon

    def test_spring_forward_releases_at_local_eight_in_summer_time(self):
        """Across the March DST change in New York the hold ends at 08:00 EDT (12:00 UTC), not 13:00 UTC."""
        evening = utc(2026, 3, 8, 4)  # 23:00 EST on Saturday 7 March; clocks go forward at 02:00 Sunday
        assert next_allowed(evening, NEW_YORK, NIGHT) == utc(2026, 3, 8, 12)

    def test_fall_back_releases_at_local_eight_in_standard_time(self):
        """Across the November DST change in Dublin the hold ends at 08:00 GMT (08:00 UTC), not 07:00 UTC."""
        evening = utc(2026, 10, 24, 22)  # 23:00 IST on Saturday 24 October; clocks go back at 02:00 Sunday
        assert next_allowed(evening, DUBLIN, NIGHT) == utc(2026, 10, 25, 8)

    def test_a_window_ending_in_the_skipped_hour_opens_after_the_gap(self):
        """Quiet until 02:30 on the night clocks skip from 02:00 to 03:00 opens at 03:30 local time."""
        quiet = QuietHours(start=time(1), end=time(2, 30))
        held = next_allowed(utc(2026, 3, 8, 6, 30), NEW_YORK, quiet)  # 01:30 EST
        assert held == utc(2026, 3, 8, 7, 30) and held.astimezone(NEW_YORK).hour == 3

    def test_daytime_window_that_does_not_span_midnight(self):
        """A 12:00-14:00 quiet window holds a 13:00 send until 14:00."""
        lunch = QuietHours(start=time(12), end=time(14))
        assert next_allowed(utc(2026, 11, 23, 13), DUBLIN, lunch) == utc(2026, 11, 23, 14)
        assert next_allowed(utc(2026, 11, 23, 11), DUBLIN, lunch) == utc(2026, 11, 23, 11)


class TestBroadcastTiming:
    def test_broadcast_is_due_once_in_the_range_that_contains_its_time(self):
        """The outage broadcast is due in the tick range covering 13:00 UTC and in no other."""
        assert broadcasts_due(SET, utc(2026, 11, 23, 12), utc(2026, 11, 23, 12, 59)) == []
        assert [c.id for c in broadcasts_due(SET, utc(2026, 11, 23, 12, 59), utc(2026, 11, 23, 13))] == [
            "outage"
        ]
        assert broadcasts_due(SET, utc(2026, 11, 23, 13), utc(2026, 11, 23, 14)) == []
