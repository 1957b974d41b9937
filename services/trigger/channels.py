"""Channel eligibility: where a campaign's message can go for this person right now.

Email needs an address and (unless transactional) the email subscription; SMS needs a phone
number; push needs a mobile device token with push enabled, webpush a web one — all such
devices, or only the primary device, as the campaign says; in-app needs an app install;
a webhook always has its destination. A channel the person unsubscribed from is never used
for marketing. ``first_eligible`` picks the first channel in ``order`` with a destination,
``all`` uses every one of them. The caller (core) moves on to the next channel when
``first_eligible``'s first choice is capped.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.trigger.definitions import Campaign
from services.trigger.inputs import Device, PersonView

MOBILE = ("ios", "android")


@dataclass(frozen=True)
class Destination:
    channel: str
    address: str  # email address, phone number, device token, install id or URL
    platform: str | None = None
    device_key: str = ""  # which device, so each device's push gets its own message id


def _devices(view: PersonView, campaign: Campaign, usable: list[Device]) -> list[Device]:
    if campaign.channels.push_devices == "primary":
        return [d for d in usable if d.primary]
    return usable


def destinations_for(channel: str, campaign: Campaign, view: PersonView) -> list[Destination]:
    """Every destination of one channel (empty: the person cannot be reached on it)."""
    if not campaign.transactional and channel in view.unsubscribed:
        return []
    if channel == "email":
        ok = view.email and (campaign.transactional or view.email_subscribed)
        return [Destination("email", view.email)] if ok and view.email else []
    if channel == "sms":
        return [Destination("sms", view.phone)] if view.phone else []
    if channel in ("push", "webpush"):
        platforms = MOBILE if channel == "push" else ("web",)
        usable = [d for d in view.devices if d.push_token and d.push_enabled and d.platform in platforms]
        return [
            Destination(channel, d.push_token or "", d.platform, d.install_id)
            for d in _devices(view, campaign, usable)
        ]
    if channel == "inapp":
        installs = [d for d in view.devices if d.platform in MOBILE]
        return [
            Destination("inapp", d.install_id, d.platform, d.install_id)
            for d in _devices(view, campaign, installs)
        ]
    if channel == "webhook":
        template = campaign.templates.webhook
        return [Destination("webhook", template.url)] if template else []
    return []


def candidates(campaign: Campaign, view: PersonView) -> list[list[Destination]]:
    """The reachable channels in the campaign's order, each with all its destinations."""
    found = [destinations_for(channel, campaign, view) for channel in campaign.channels.order]
    return [group for group in found if group]


def choose(campaign: Campaign, view: PersonView) -> list[Destination]:
    """The destinations this send goes to when nothing is capped, following the channel rules."""
    groups = candidates(campaign, view)
    if campaign.channels.strategy == "first_eligible":
        groups = groups[:1]
    return [d for group in groups for d in group]
