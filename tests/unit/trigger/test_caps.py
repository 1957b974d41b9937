"""Frequency caps (per person per channel and per campaign) and re-entry rules, exact over windows."""

from services.trigger.caps import cap_reached, may_enter, record_entry, record_send
from services.trigger.state import PersonState

from .build import at, campaigns

SET = campaigns(
    """
    channel_caps:
      sms: [{max: 2, window: 1d}]
    campaigns:
      - id: promo
        trigger: {kind: event, name: a}
        caps: [{max: 1, window: 1h}]
        reentry: {mode: once}
        channels: {order: [sms, email]}
        templates: {sms: {text: x}, email: {subject: s, text: t}}
      - id: news
        trigger: {kind: event, name: b}
        reentry: {mode: after, after: 3d}
        channels: {order: [sms]}
        templates: {sms: {text: x}}
      - id: otp
        transactional: true
        trigger: {kind: api, name: otp}
        channels: {order: [sms]}
        templates: {sms: {text: code}}
    """
)
PROMO, NEWS, OTP = SET.get("promo"), SET.get("news"), SET.get("otp")


def sent(*sends) -> PersonState:
    state = PersonState()
    for campaign, channel, when in sends:
        state = record_send(SET, campaign, channel, state, when)
    return state


class TestFrequencyCaps:
    def test_channel_cap_counts_sends_across_campaigns(self):
        """Two SMS from any campaigns within a day stop a third SMS, while email is still free."""
        state = sent((NEWS, "sms", at(0)), (PROMO, "sms", at(90)))
        assert cap_reached(SET, NEWS, "sms", state, at(120)) is not None
        assert cap_reached(SET, PROMO, "email", state, at(150)) is None  # promo's own 1 h cap has passed

    def test_window_slides_exactly(self):
        """The oldest send stops counting exactly one window after it was sent."""
        state = sent((NEWS, "sms", at(0)), (NEWS, "sms", at(10)))
        assert cap_reached(SET, NEWS, "sms", state, at(days=1, milliseconds=-1)) is not None
        assert cap_reached(SET, NEWS, "sms", state, at(days=1)) is None

    def test_campaign_cap_is_per_campaign(self):
        """One promo in the last hour blocks another promo on any channel, but not another campaign."""
        state = sent((PROMO, "email", at(0)))
        assert cap_reached(SET, PROMO, "email", state, at(59)) is not None
        assert cap_reached(SET, NEWS, "sms", state, at(59)) is None
        assert cap_reached(SET, PROMO, "email", state, at(60)) is None

    def test_transactional_sends_are_never_capped_nor_counted(self):
        """One-time codes go through a full SMS cap and do not use it up."""
        full = sent((NEWS, "sms", at(0)), (NEWS, "sms", at(1)))
        assert cap_reached(SET, OTP, "sms", full, at(2)) is None
        assert sent((OTP, "sms", at(0)), (OTP, "sms", at(1))).sends == []

    def test_log_forgets_what_no_window_can_see(self):
        """Sends older than the longest configured window are dropped from the state."""
        state = sent((NEWS, "sms", at(0)), (NEWS, "sms", at(days=2)))
        assert len(state.sends) == 1


class TestReentry:
    def test_once_per_person(self):
        """After entering once, a 'once' campaign never admits the person again."""
        state = record_entry(PROMO, PersonState(), at(0))
        assert may_enter(PROMO, PersonState(), at(0))
        assert not may_enter(PROMO, state, at(days=365))

    def test_once_per_period(self):
        """A 'once per 3 days' campaign admits again exactly three days after the last entry."""
        state = record_entry(NEWS, PersonState(), at(0))
        assert not may_enter(NEWS, state, at(days=3, milliseconds=-1))
        assert may_enter(NEWS, state, at(days=3))

    def test_always_by_default(self):
        """Without a rule a person may enter every time."""
        assert may_enter(OTP, record_entry(OTP, PersonState(), at(0)), at(0))
