"""Which campaigns an event (or a broadcast) starts, and which conversions it records.

Only direct triggers fire here: event/tag, segment entered/exited, location entered/exited/
dwelled, API transactional sends, and broadcasts for a person. Drop-off and inactivity
triggers fire later from their timers (``schedule.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.trigger.definitions import (
    ApiTrigger,
    BroadcastTrigger,
    Campaign,
    CampaignSet,
    EventMatcher,
    EventTrigger,
    LocationTrigger,
    SegmentTrigger,
)
from services.trigger.filters import matches
from services.trigger.inputs import PersonEvent, PersonView
from services.trigger.state import PersonState, TriggerRef, to_ms


@dataclass(frozen=True)
class Fire:
    """A campaign entered by a person because of ``trigger``."""

    campaign_id: str
    trigger: TriggerRef
    slot: str = ""


def ref_of(event: PersonEvent) -> TriggerRef:
    return TriggerRef(event.event_id, event.kind, event.name, to_ms(event.time), dict(event.properties))


def event_matches(matcher: EventMatcher, event: PersonEvent) -> bool:
    return (
        event.kind == matcher.kind and event.name == matcher.name and matches(matcher.where, event.properties)
    )


def _direct(campaign: Campaign, event: PersonEvent) -> bool:
    trigger = campaign.trigger
    if isinstance(trigger, EventTrigger):
        return event_matches(trigger, event)
    if isinstance(trigger, SegmentTrigger):
        change = event.segment
        return (
            event.kind == "segment"
            and change is not None
            and change.segment_id == trigger.segment
            and change.change == trigger.change
        )
    if isinstance(trigger, LocationTrigger):
        loc = event.location
        if event.kind != "location" or loc is None:
            return False
        if loc.transition != trigger.transition or loc.region_id not in trigger.regions:
            return False
        if trigger.min_dwell is not None:
            return (loc.dwell_seconds or 0) >= trigger.min_dwell.total_seconds()
        return True
    if isinstance(trigger, ApiTrigger):
        return event.kind == "api" and event.name == trigger.name
    return False


def matched_campaigns(event: PersonEvent, campaigns: CampaignSet) -> list[Fire]:
    """The enabled campaigns this event enters the person into right now, in file order."""
    ref = ref_of(event)
    return [Fire(c.id, ref) for c in campaigns.file.campaigns if c.enabled and _direct(c, event)]


def record_conversions(event: PersonEvent, campaigns: CampaignSet, state: PersonState) -> PersonState:
    """Remember when the person last converted for each campaign with a ``converted_by`` event."""
    state = state.copy()
    when = to_ms(event.time)
    for campaign in campaigns.file.campaigns:
        matcher = campaign.conditions.converted_by
        if matcher is not None and event_matches(matcher, event):
            state.conversions[campaign.id] = max(state.conversions.get(campaign.id, 0), when)
    return state


def broadcast_fire(campaign: Campaign, view: PersonView) -> Fire | None:
    """This person's share of a broadcast: in the segment and matching the attribute filter."""
    trigger = campaign.trigger
    if not isinstance(trigger, BroadcastTrigger) or not campaign.enabled:
        return None
    if trigger.segment not in view.segments or not matches(trigger.where, view.attributes):
        return None
    at = trigger.at.isoformat()
    # One trigger id per broadcast occurrence: a re-run of the same broadcast yields the same ids.
    ref = TriggerRef(f"broadcast:{campaign.id}:{at}", "broadcast", campaign.id, to_ms(trigger.at))
    return Fire(campaign.id, ref, slot=at)
