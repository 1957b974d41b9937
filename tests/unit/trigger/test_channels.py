"""Channel eligibility and channel rules."""

from services.trigger.channels import choose, destinations_for
from services.trigger.inputs import Device

from .build import campaigns, person

SET = campaigns(
    """
    campaigns:
      - id: fallback
        trigger: {kind: event, name: a}
        channels: {order: [push, email, sms], strategy: first_eligible}
        templates: {push: {title: t, body: b}, email: {subject: s, text: t}, sms: {text: t}}
      - id: everywhere
        trigger: {kind: event, name: a}
        channels: {order: [push, webpush, email, sms, inapp], strategy: all, push_devices: primary}
        templates:
          push: {title: t, body: b}
          webpush: {title: t, body: b}
          inapp: {title: t, body: b}
          email: {subject: s, text: t}
          sms: {text: t}
      - id: receipt
        transactional: true
        trigger: {kind: api, name: r}
        channels: {order: [email]}
        templates: {email: {subject: s, text: t}}
      - id: hook
        trigger: {kind: event, name: a}
        channels: {order: [webhook]}
        templates: {webhook: {url: "https://crm.example.com/hook", body: "{}"}}
    """
)
FALLBACK, EVERYWHERE, RECEIPT = SET.get("fallback"), SET.get("everywhere"), SET.get("receipt")
DEVICES = (
    Device("dev-a", "ios", "tok-a", push_enabled=True, primary=True),
    Device("dev-b", "android", "tok-b", push_enabled=True),
    Device("dev-c", "android", "tok-c", push_enabled=False),
    Device("dev-d", "android", None, push_enabled=True),
    Device("dev-w", "web", "tok-w", push_enabled=True),
)


class TestChannels:
    def test_email_needs_an_address_and_a_subscription(self):
        """Marketing email needs both an address and the email subscription."""
        assert destinations_for("email", FALLBACK, person())[0].address == "ann@example.com"
        assert destinations_for("email", FALLBACK, person(email_subscribed=False)) == []
        assert destinations_for("email", FALLBACK, person(email=None)) == []

    def test_transactional_email_needs_only_an_address(self):
        """A receipt goes to an address whose owner declined marketing email."""
        assert destinations_for("email", RECEIPT, person(email_subscribed=False))

    def test_sms_needs_a_phone_number(self):
        """Without a phone number SMS is not possible."""
        assert destinations_for("sms", FALLBACK, person(phone=None)) == []
        assert destinations_for("sms", FALLBACK, person())[0].address == "353861234567"

    def test_push_goes_to_every_enabled_mobile_token(self):
        """Push reaches mobile devices with a token and push enabled, and no others."""
        found = destinations_for("push", FALLBACK, person(devices=DEVICES))
        assert [(d.address, d.platform) for d in found] == [("tok-a", "ios"), ("tok-b", "android")]

    def test_primary_device_only_when_configured(self):
        """With push_devices: primary only the primary device is used."""
        assert [d.address for d in destinations_for("push", EVERYWHERE, person(devices=DEVICES))] == ["tok-a"]

    def test_webpush_uses_browsers(self):
        """Web push uses web devices' tokens."""
        assert [d.address for d in destinations_for("webpush", FALLBACK, person(devices=DEVICES))] == [
            "tok-w"
        ]

    def test_first_eligible_falls_back_in_order(self):
        """Without a usable device the fallback campaign chooses email, then SMS."""
        assert [d.channel for d in choose(FALLBACK, person(devices=()))] == ["email"]
        assert [d.channel for d in choose(FALLBACK, person(devices=(), email=None))] == ["sms"]
        assert choose(FALLBACK, person(devices=(), email=None, phone=None)) == []

    def test_all_strategy_uses_every_reachable_channel(self):
        """Strategy 'all' uses each reachable channel; the primary device is a phone, so no webpush."""
        channels = [d.channel for d in choose(EVERYWHERE, person(devices=DEVICES))]
        assert channels == ["push", "email", "sms", "inapp"]

    def test_unsubscribed_channel_is_skipped_for_marketing(self):
        """A person who opted out of SMS gets no marketing SMS, but still email."""
        view = person(devices=(), unsubscribed=frozenset({"sms"}))
        assert [d.channel for d in choose(EVERYWHERE, view)] == ["email"]

    def test_webhook_always_has_its_destination(self):
        """A webhook campaign goes to its configured URL whatever the person's channels."""
        assert choose(SET.get("hook"), person(email=None, phone=None, devices=()))[0].channel == "webhook"
