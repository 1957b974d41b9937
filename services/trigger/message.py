"""The outbound message record (schemas/outbound_message.avsc) and its deterministic id.

The id is a hash of campaign, person, triggering event id, send slot, channel and device: a
replay after a crash (same trigger, same decisions) produces the very same id, so the outbound
topic's consumers and the senders deduplicate on it and the person gets the message once.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from services.common.topics import OUTBOUND_TOPICS, TopicSpec
from services.trigger.channels import Destination
from services.trigger.definitions import Campaign
from services.trigger.state import TriggerRef, to_ms

OUTBOUND_BY_CHANNEL: dict[str, TopicSpec] = {
    spec.name.removeprefix("outbound."): spec for spec in OUTBOUND_TOPICS
}


def message_id(
    campaign_id: str,
    person_id: str,
    trigger_event_id: str,
    slot: str = "",
    channel: str = "",
    device_key: str = "",
) -> str:
    """Stable across replays: the same inputs give the same id, any difference gives another."""
    material = "\x1f".join((campaign_id, person_id, trigger_event_id, slot, channel, device_key))
    return "msg-" + hashlib.sha256(material.encode()).hexdigest()[:32]


def outbound_message(
    *,
    msg_id: str,
    campaign: Campaign,
    person_id: str,
    destination: Destination,
    content: dict[str, str],
    tracking_token: str | None,
    trigger: TriggerRef,
    slot: str,
    now: datetime,
) -> dict[str, Any]:
    """One ``outbound_message`` record; times are epoch milliseconds as Avro timestamp-millis."""
    address = (
        content.get("url", destination.address) if destination.channel == "webhook" else destination.address
    )
    content = dict(content)
    if destination.channel == "webhook" and campaign.templates.webhook is not None:
        content["method"] = campaign.templates.webhook.method  # the sender needs it; not a template part
    return {
        "message_id": msg_id,
        "created_time": to_ms(now),
        "person_id": person_id,
        "campaign_id": campaign.id,
        "channel": destination.channel,
        "destination": address,
        "platform": destination.platform,
        "content": content,
        "tracking_token": tracking_token,
        "transactional": campaign.transactional,
        "trigger_event_id": trigger.event_id,
        "trigger_kind": trigger.kind,
        "trigger_name": trigger.name,
        "trigger_time": trigger.time_ms,
        "send_slot": slot or None,
    }


def topic_for(channel: str) -> TopicSpec:
    return OUTBOUND_BY_CHANNEL[channel]


# Ingest accepts "sent" for these channels only (schemas/README.md, delivery receipt statuses).
RECEIPT_CHANNELS = ("email", "sms", "push", "webpush")
_IDENTITY_KEYS = ("install_id", "anonymous_id", "external_user_id")


def sent_receipt(
    message: dict[str, Any], identities: dict[str, str], device_key: str = ""
) -> dict[str, Any] | None:
    """The ``sent`` delivery receipt closing the loop for campaign analytics (None: channel has none).

    Its own message id derives from the message's, so a replay's receipt deduplicates in ingest.
    The identity names the person by ids only (device install id for push), never by contact data.
    """
    if message["channel"] not in RECEIPT_CHANNELS:
        return None
    identity: dict[str, str | None] = {key: identities.get(key) for key in _IDENTITY_KEYS}
    identity.update(email=None, phone=None)
    if device_key:
        identity["install_id"] = device_key
    return {
        "message_id": f"sent-{message['message_id']}",
        "event_time": message["created_time"],
        "received_time": None,
        "source": "trigger",
        "app_id": None,
        "backfill": False,
        "identity": identity,
        "context": {},
        "channel": message["channel"],
        "status": "sent",
        "campaign_id": message["campaign_id"],
        "send_id": message["message_id"],
        "link_id": None,
        "link_url": None,
        "provider": None,
        "reason": None,
    }
