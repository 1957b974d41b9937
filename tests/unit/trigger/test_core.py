"""The trigger's decisions end to end, with a controllable clock: each trigger kind, delays,
drop-off recovery, send-time re-checks, quiet hours, caps, re-entry, template errors, replays."""

from datetime import UTC, datetime

from services.trigger.core import Context, Emit, Reject, Scheduled, Skip, on_broadcast, on_event, on_tick
from services.trigger.state import PersonState

from .build import api, at, context, emitted, event, location, person, segment, tag

CTX = context(
    """
    default_timezone: Europe/Dublin
    quiet_hours: {start: "21:00", end: "08:00", action: hold}
    channel_caps:
      sms: [{max: 1, window: 1d}]
    campaigns:
      - id: welcome
        trigger: {kind: event, name: signup}
        delay: 1h
        reentry: {mode: once}
        conditions: {subscription: newsletter}
        channels: {order: [email]}
        templates:
          email:
            subject: "Welcome, {{ person.first_name }}"
            html: '<html><body><a href="https://example.com/start">Start</a></body></html>'
      - id: cart
        trigger:
          kind: dropoff
          start: {name: cart_updated}
          complete: {name: Order Completed}
          within: 2h
        channels: {order: [sms]}
        templates: {sms: {text: "Your {{ event.properties.count }} items are waiting"}}
      - id: trial-nudge
        trigger: {kind: segment, segment: trial, change: entered}
        delay: 1d
        conditions: {converted_by: {name: Subscribed}}
        channels: {order: [push]}
        templates: {push: {title: "Enjoying it?", body: "Upgrade today"}}
      - id: store
        trigger: {kind: location, regions: [store-1], transition: entered}
        channels: {order: [push], push_devices: all}
        quiet_hours: {start: "22:00", end: "07:00", action: drop}
        templates: {push: {title: "Hello", body: "10% off in store", url: "https://shop.example.com/offer"}}
      - id: receipt
        transactional: true
        trigger: {kind: api, name: order_receipt}
        channels: {order: [email]}
        templates:
          email:
            subject: "Order {{ payload.order_id }}"
            text: "{% for i in payload['items'] %}{{ i.qty }}x {{ i.name }};{% endfor %}"
      - id: promo
        trigger: {kind: tag, name: browsed_deals}
        channels: {order: [sms]}
        templates: {sms: {text: "Deals for you"}}
      - id: price-drop
        trigger: {kind: tag, name: price_drop}
        channels: {order: [sms, email], strategy: first_eligible}
        templates: {sms: {text: "Price drop"}, email: {subject: "Price drop", text: "Now cheaper"}}
      - id: vip-hello
        trigger: {kind: tag, name: vip}
        channels: {order: [sms]}
        templates: {sms: {text: "Hi {{ person.nickname }}"}}
      - id: dormant
        trigger: {kind: inactivity, after: 7d, activity: {name: app_launch}}
        channels: {order: [email]}
        templates: {email: {subject: "We miss you", text: "Come back"}}
      - id: outage
        transactional: true
        trigger: {kind: broadcast, segment: area-d15, at: "2026-11-23T23:30:00Z"}
        channels: {order: [sms]}
        templates: {sms: {text: "Outage in your area; we are on it."}}
    """,
    tracking=True,
)
ANN = person(segments=frozenset({"trial"}))


def run_event(evt, state=None, view=ANN, now=None, ctx=CTX):
    return on_event(evt, view, state or PersonState(), now or evt.time, ctx)


class TestEventTriggersWithDelay:
    def test_welcome_email_goes_one_hour_after_signup(self):
        """A signup schedules the welcome email; nothing goes at 59 minutes, the email goes at 60."""
        first = run_event(event("signup", at(0)))
        assert [type(a) for a in first.actions] == [Scheduled]
        assert emitted(on_tick(ANN, first.state, at(59), CTX).actions) == []
        sent = on_tick(ANN, first.state, at(60), CTX)
        [message] = emitted(sent.actions)
        assert (message["channel"], message["destination"]) == ("email", "ann@example.com")
        assert message["content"]["subject"] == "Welcome, Ann"
        assert message["trigger_name"] == "signup" and sent.state.pending == {}

    def test_email_links_and_pixel_carry_the_tracking_token(self):
        """The sent email's links point at the tracker and it carries a tracking token."""
        state = run_event(event("signup", at(0))).state
        [message] = emitted(on_tick(ANN, state, at(60), CTX).actions)
        assert "https://t.example.com/c/" in message["content"]["html"]
        assert "https://t.example.com/o/" in message["content"]["html"]
        assert message["tracking_token"]

    def test_pending_send_survives_a_restart(self):
        """The state written to bytes during the delay, read back after a restart, still sends."""
        from services.trigger.state import PersonState as Reloaded

        state = Reloaded.from_bytes(run_event(event("signup", at(0))).state.to_bytes())
        assert len(emitted(on_tick(ANN, state, at(61), CTX).actions)) == 1

    def test_reentry_once_skips_a_second_signup(self):
        """A second signup never brings a second welcome."""
        state = on_tick(ANN, run_event(event("signup", at(0))).state, at(60), CTX).state
        again = run_event(event("signup", at(days=3)), state)
        assert [a.reason for a in again.actions] == ["reentry"]

    def test_unsubscribed_during_the_delay_cancels(self):
        """Unsubscribing from the newsletter before the hour is up means no welcome email."""
        state = run_event(event("signup", at(0))).state
        gone = person(unsubscribed=frozenset({"newsletter"}))
        out = on_tick(gone, state, at(60), CTX)
        assert emitted(out.actions) == [] and [a.reason for a in out.actions] == ["unsubscribed"]

    def test_no_reachable_channel_is_a_skip(self):
        """Without an email address the welcome is skipped as no_channel, not sent broken."""
        state = run_event(event("signup", at(0))).state
        out = on_tick(person(email=None), state, at(60), CTX)
        assert [a.reason for a in out.actions] == ["no_channel"]


class TestDropoffRecovery:
    def test_purchase_in_time_means_no_message(self):
        """A cart followed by a purchase within two hours sends nothing."""
        state = run_event(event("cart_updated", at(0), count=3)).state
        state = run_event(event("Order Completed", at(90)), state).state
        assert emitted(on_tick(ANN, state, at(240), CTX).actions) == []

    def test_purchase_too_late_means_the_reminder_went(self):
        """Without a purchase within two hours the reminder SMS goes at the deadline, with the cart's data."""
        state = run_event(event("cart_updated", at(0), count=3)).state
        out = on_tick(ANN, state, at(120), CTX)
        [message] = emitted(out.actions)
        assert message["content"]["text"] == "Your 3 items are waiting"
        late = run_event(event("Order Completed", at(130)), out.state)
        assert emitted(late.actions) == []

    def test_inactivity_sends_after_seven_quiet_days(self):
        """Seven days without an app launch send the win-back email; an earlier launch resets the clock."""
        state = run_event(event("app_launch", at(0))).state
        state = run_event(event("app_launch", at(days=5)), state).state
        assert emitted(on_tick(ANN, state, at(days=7), CTX).actions) == []
        [message] = emitted(on_tick(ANN, state, at(days=12), CTX).actions)
        assert message["campaign_id"] == "dormant"


class TestSendTimeChecks:
    def test_still_in_segment_at_send_time(self):
        """Leaving the trial segment during the one-day delay cancels the nudge."""
        state = run_event(segment("trial", "entered", at(0))).state
        out = on_tick(person(segments=frozenset()), state, at(days=1), CTX)
        assert [a.reason for a in out.actions] == ["not_in_segment"]

    def test_converted_during_the_delay(self):
        """Subscribing during the delay cancels the nudge."""
        state = run_event(segment("trial", "entered", at(0))).state
        state = run_event(event("Subscribed", at(60)), state).state
        out = on_tick(ANN, state, at(days=1), CTX)
        assert [a.reason for a in out.actions] == ["converted"]

    def test_conditions_still_true_send_to_every_device(self):
        """Still in trial and not converted: the nudge is pushed to both of the person's phones."""
        state = run_event(segment("trial", "entered", at(0))).state
        messages = emitted(on_tick(ANN, state, at(days=1), CTX).actions)
        assert sorted(m["destination"] for m in messages) == ["tok-a", "tok-b"]
        assert len({m["message_id"] for m in messages}) == 2

    def test_each_message_comes_with_its_sent_receipt(self):
        """Every pushed message carries a 'sent' receipt naming it and the device it went to."""
        state = run_event(segment("trial", "entered", at(0))).state
        emits = [a for a in on_tick(ANN, state, at(days=1), CTX).actions if isinstance(a, Emit)]
        assert {(e.receipt["send_id"], e.receipt["identity"]["install_id"]) for e in emits} == {
            (e.message["message_id"], "dev-a" if e.message["destination"] == "tok-a" else "dev-b")
            for e in emits
        }

    def test_segment_change_counts_even_before_the_profile_shows_it(self):
        """An immediate segment campaign goes although the profile view has not caught up with the entry."""
        ctx = context(
            """
            campaigns:
              - id: hello-vip
                trigger: {kind: segment, segment: vip, change: entered}
                channels: {order: [sms]}
                templates: {sms: {text: "Welcome to VIP"}}
            """
        )
        out = on_event(segment("vip", "entered", at(0)), person(), PersonState(), at(0), ctx)
        assert len(emitted(out.actions)) == 1

    def test_removed_campaign_cancels_its_pending_sends(self):
        """After a reload without the welcome campaign, its pending send is skipped."""
        state = run_event(event("signup", at(0))).state
        reloaded = Context(CTX.campaigns.__class__(CTX.campaigns.file.model_copy(update={"campaigns": []})))
        out = on_tick(ANN, state, at(60), reloaded)
        assert [a.reason for a in out.actions] == ["campaign_removed"] and out.state.pending == {}


class TestQuietHoursAndCaps:
    def test_evening_send_is_held_until_morning_local_time(self):
        """A promo triggered at 22:00 in Dublin waits until 08:00 Dublin time, then goes."""
        out = run_event(tag("browsed_deals", datetime(2026, 11, 23, 22, tzinfo=UTC)))
        [held] = out.actions
        assert isinstance(held, Scheduled) and held.due == datetime(2026, 11, 24, 8, tzinfo=UTC)
        assert emitted(on_tick(ANN, out.state, datetime(2026, 11, 24, 7, 59, tzinfo=UTC), CTX).actions) == []
        assert len(emitted(on_tick(ANN, out.state, datetime(2026, 11, 24, 8, tzinfo=UTC), CTX).actions)) == 1

    def test_the_same_moment_is_daytime_elsewhere(self):
        """At 22:00 UTC a person in Los Angeles (14:00) gets the promo at once."""
        la = person(timezone="America/Los_Angeles")
        out = run_event(tag("browsed_deals", datetime(2026, 11, 23, 22, tzinfo=UTC)), view=la)
        assert len(emitted(out.actions)) == 1

    def test_drop_action_discards_the_send(self):
        """A store visit at 23:00 with quiet hours set to drop sends nothing, ever."""
        out = run_event(location("store-1", "entered", datetime(2026, 11, 23, 23, tzinfo=UTC)))
        assert [a.reason for a in out.actions] == ["quiet_hours"] and out.state.pending == {}

    def test_geofence_entry_pushes_with_a_tracked_link(self):
        """Entering the store in the afternoon pushes to both devices with tracked offer links."""
        messages = emitted(run_event(location("store-1", "entered", at(0))).actions)
        assert len(messages) == 2
        assert all(m["content"]["url"].startswith("https://t.example.com/c/") for m in messages)

    def test_sms_cap_per_person_per_channel(self):
        """A second marketing SMS within a day is skipped by the channel cap."""
        first = run_event(tag("browsed_deals", at(0)))
        second = run_event(tag("browsed_deals", at(10)), first.state)
        assert len(emitted(first.actions)) == 1
        assert [a.reason for a in second.actions] == ["frequency_cap"]

    def test_capped_first_choice_falls_back_to_the_next_channel(self):
        """With the day's SMS used up, a first_eligible campaign preferring SMS sends email instead."""
        first = run_event(tag("browsed_deals", at(0)))
        out = run_event(tag("price_drop", at(10)), first.state)
        assert [m["channel"] for m in emitted(out.actions)] == ["email"]
        assert [a.reason for a in out.actions if isinstance(a, Skip)] == ["frequency_cap"]

    def test_transactional_ignores_quiet_hours_caps_and_subscription(self):
        """A receipt at 03:00 for someone with a full SMS cap and no marketing consent goes at once."""
        night = datetime(2026, 11, 24, 3, tzinfo=UTC)
        payload = {"order_id": "o-9", "items": [{"name": "Modem", "qty": 1}, {"name": "Cable", "qty": 2}]}
        out = run_event(api("order_receipt", payload, night), view=person(email_subscribed=False))
        [message] = emitted(out.actions)
        assert message["content"]["text"] == "1x Modem;2x Cable;" and message["transactional"] is True

    def test_broadcast_reaches_segment_members_at_night(self):
        """The outage SMS goes to a member of the area's segment at its time, and not to others."""
        member = person(segments=frozenset({"area-d15"}))
        when = datetime(2026, 11, 23, 23, 30, tzinfo=UTC)
        [message] = emitted(on_broadcast("outage", member, PersonState(), when, CTX).actions)
        assert message["trigger_kind"] == "broadcast" and message["send_slot"] == "2026-11-23T23:30:00+00:00"
        assert on_broadcast("outage", person(), PersonState(), when, CTX).actions == []


class TestTemplateErrorsAndReplays:
    def test_missing_variable_rejects_that_message_only(self):
        """A template naming a missing attribute yields a template_error rejection and no message."""
        out = run_event(tag("vip", at(0)))
        [reject] = out.actions
        assert isinstance(reject, Reject) and reject.rejection.reason == "template_error"
        assert "nickname" in reject.rejection.message and reject.message_id.startswith("msg-")

    def test_same_person_with_the_attribute_gets_the_message(self):
        """With the attribute present the same campaign renders fine."""
        view = person(attributes={"nickname": "Annie"})
        assert emitted(run_event(tag("vip", at(0)), view=view).actions)[0]["content"]["text"] == "Hi Annie"

    def test_replay_after_a_crash_produces_the_same_message_id(self):
        """Replaying the signup from the last saved state (crash before commit) gives identical messages."""
        saved = run_event(event("signup", at(0), event_id="ev-42")).state.to_bytes()
        first = emitted(on_tick(ANN, PersonState.from_bytes(saved), at(60), CTX).actions)
        replay_state = run_event(event("signup", at(0), event_id="ev-42")).state
        second = emitted(on_tick(ANN, replay_state, at(75), CTX).actions)
        assert [m["message_id"] for m in first] == [m["message_id"] for m in second]
        assert first[0]["content"] == second[0]["content"]

    def test_duplicate_trigger_while_pending_queues_once(self):
        """The same signup delivered twice while its send waits leads to one email."""
        state = run_event(event("signup", at(0), event_id="ev-42")).state
        state = run_event(event("signup", at(0), event_id="ev-42"), state, now=at(5)).state
        assert len(emitted(on_tick(ANN, state, at(60), CTX).actions)) == 1

    def test_skips_are_only_metrics(self):
        """Skipped sends are Skip actions with a reason, never rejections (nothing to dead-letter)."""
        state = run_event(event("signup", at(0))).state
        out = on_tick(person(email=None), state, at(60), CTX)
        assert all(isinstance(a, Skip) for a in out.actions)


class TestCrashReplay:
    STREAM = (
        event("signup", at(0), event_id="e1"),
        event("cart_updated", at(5), event_id="e2", count=2),
        tag("browsed_deals", at(30)),
        location("store-1", "entered", at(45)),
        event("cart_updated", at(50), event_id="e3", count=4),
        event("app_launch", at(70), event_id="e4"),
        segment("trial", "entered", at(80)),
        api("order_receipt", {"order_id": "o-1", "items": [{"name": "Modem", "qty": 1}]}, at(90)),
    )

    def _run(self, records, state, view=ANN, finish=True):
        """Feed records in order (ticking up to each one's time first), saving state after each."""
        ids, saved = [], []
        for record in records:
            out = on_tick(view, state, record.time, CTX)
            ids += [m["message_id"] for m in emitted(out.actions)]
            out = on_event(record, view, out.state, record.time, CTX)
            ids += [m["message_id"] for m in emitted(out.actions)]
            state = out.state
            saved.append(state.to_bytes())
        if not finish:
            return ids, saved
        final = on_tick(view, state, at(days=30), CTX)
        return ids + [m["message_id"] for m in emitted(final.actions)], saved

    def test_a_crash_anywhere_neither_loses_nor_invents_messages(self):
        """A crash after any record, replayed from any earlier committed state, yields the clean run's ids."""
        clean, saved = self._run(self.STREAM, PersonState())
        assert len(clean) == len(set(clean)) >= 5
        for crash in range(len(self.STREAM)):
            for committed in range(crash + 1):
                before_crash, _ = self._run(self.STREAM[: crash + 1], PersonState(), finish=False)
                restart = PersonState.from_bytes(saved[committed - 1]) if committed else PersonState()
                replayed, _ = self._run(self.STREAM[committed:], restart)
                seen = set(before_crash) | set(replayed)
                assert seen == set(clean), (crash, committed)
