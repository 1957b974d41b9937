"""The outbound message record and its deterministic id."""

import pytest

from services.common.jsonform import JsonForm
from services.common.serde import Serde
from services.trigger.channels import Destination
from services.trigger.message import message_id, outbound_message, sent_receipt, topic_for
from services.trigger.state import TriggerRef, to_ms

from .build import at, campaigns

SET = campaigns(
    """
    campaigns:
      - id: welcome
        trigger: {kind: event, name: signup}
        channels: {order: [email]}
        templates: {email: {subject: s, text: t}}
    """
)
BASE = ("welcome", "p-1", "ev-1", "", "email", "")


class TestMessageId:
    def test_same_inputs_same_id(self):
        """Deciding the same send again (a replay after a crash) gives the same message id."""
        assert message_id(*BASE) == message_id(*BASE)
        assert message_id(*BASE).startswith("msg-") and len(message_id(*BASE)) == 36

    @pytest.mark.parametrize("position", range(6))
    def test_any_difference_gives_another_id(self, position):
        """Another campaign, person, trigger, slot, channel or device gives a different id."""
        changed = list(BASE)
        changed[position] += "x"
        assert message_id(*changed) != message_id(*BASE)

    def test_fields_cannot_bleed_into_each_other(self):
        """Moving characters between fields changes the id (fields are separated, not concatenated)."""
        assert message_id("ab", "c", "ev") != message_id("a", "bc", "ev")


class TestOutboundRecord:
    def test_record_is_valid_avro_and_round_trips(self):
        """A built message encodes with schemas/outbound_message.avsc and decodes to the same record."""
        record = outbound_message(
            msg_id=message_id(*BASE),
            campaign=SET.get("welcome"),
            person_id="p-1",
            destination=Destination("email", "ann@example.com"),
            content={"subject": "Hi", "text": "Hello"},
            tracking_token="tok",
            trigger=TriggerRef("ev-1", "event", "signup", to_ms(at(0)), {"plan": "pro"}),
            slot="",
            now=at(60),
        )
        serde = Serde()
        kind, decoded = serde.decode(serde.encode("outbound_message", record))
        assert kind == "outbound_message"
        assert decoded["message_id"] == record["message_id"] and decoded["content"] == record["content"]
        as_json = JsonForm().to_json("outbound_message", decoded)
        assert as_json["trigger_time"] == "2026-11-23T12:00:00.000Z" and as_json["send_slot"] is None

    def test_each_channel_has_its_outbound_topic(self):
        """Every channel maps to its declared outbound topic."""
        for channel in ("email", "sms", "push", "webpush", "inapp", "webhook"):
            assert topic_for(channel).name == f"outbound.{channel}"
            assert topic_for(channel).record_type == "outbound_message"


class TestSentReceipt:
    def test_receipt_names_the_send_and_is_valid_avro(self):
        """A 'sent' delivery receipt refers to the message and campaign and encodes as delivery_receipt."""
        message = {
            "message_id": "msg-1",
            "created_time": to_ms(at(0)),
            "channel": "push",
            "campaign_id": "welcome",
        }
        receipt = sent_receipt(message, {"external_user_id": "u-7"}, device_key="dev-a")
        assert receipt["send_id"] == "msg-1" and receipt["status"] == "sent"
        assert receipt["message_id"] == "sent-msg-1"
        assert receipt["identity"]["install_id"] == "dev-a" and receipt["identity"]["email"] is None
        kind, decoded = Serde().decode(Serde().encode("delivery_receipt", receipt))
        assert kind == "delivery_receipt" and decoded["campaign_id"] == "welcome"

    def test_channels_without_a_sent_status_get_no_receipt(self):
        """In-app and webhook sends have no 'sent' receipt (ingest would refuse one)."""
        for channel in ("inapp", "webhook"):
            assert sent_receipt({"channel": channel}, {}) is None
