"""The trigger's decisions for one person: (input, state, now) -> (new state, actions).

Three entry points, one per thing the adapter sees:

- :func:`on_event` — an enriched event or a segment change arrived;
- :func:`on_tick` — time passed (call it when ``state.next_due_ms()`` is reached);
- :func:`on_broadcast` — a broadcast campaign's time came and this person may be in its audience.

Each one reads top to bottom: record conversions → update timers → match → enter (re-entry,
delay) → send what is due (re-check conditions → quiet hours → channels → caps → render →
track → message). Nothing here reads the clock, talks to Kafka or raises for bad data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.common.steps import Rejection
from services.common.topics import TopicSpec
from services.trigger.caps import cap_reached, may_enter, record_entry, record_send
from services.trigger.channels import Destination, candidates
from services.trigger.definitions import Campaign, CampaignSet, SegmentTrigger
from services.trigger.inputs import PersonEvent, PersonView
from services.trigger.match import Fire, broadcast_fire, matched_campaigns, record_conversions
from services.trigger.message import message_id, outbound_message, sent_receipt, topic_for
from services.trigger.render import Tracking, add_tracking, render
from services.trigger.schedule import add_pending, due_pending, due_timers, next_allowed, update_timers
from services.trigger.state import PendingSend, PersonState, from_ms, to_ms


@dataclass(frozen=True)
class Emit:
    """Produce ``message`` onto ``topic`` keyed by the person, and its ``sent`` receipt if any."""

    topic: TopicSpec
    key: str
    message: dict[str, Any]
    receipt: dict[str, Any] | None = None  # delivery_receipt for topic delivery-receipts


@dataclass(frozen=True)
class Reject:
    """A message that cannot be built (dead letter with this reason)."""

    rejection: Rejection
    campaign_id: str
    person_id: str
    message_id: str


@dataclass(frozen=True)
class Skip:
    """A send that rightly does not happen (metrics only): reentry, converted, frequency_cap, ..."""

    reason: str
    campaign_id: str
    person_id: str


@dataclass(frozen=True)
class Scheduled:
    """A send queued (reason ``delay``) or held for quiet hours (reason ``quiet_hours``) until ``due``."""

    reason: str
    campaign_id: str
    person_id: str
    due: datetime


Action = Emit | Reject | Skip | Scheduled


@dataclass(frozen=True)
class Outcome:
    state: PersonState
    actions: list[Action]


@dataclass(frozen=True)
class Context:
    campaigns: CampaignSet
    tracking: Tracking | None = None


def on_event(
    event: PersonEvent, view: PersonView, state: PersonState, now: datetime, ctx: Context
) -> Outcome:
    view = _with_segment_change(view, event)  # the change itself is news the profile may not show yet
    state = record_conversions(event, ctx.campaigns, state)  # before sending: a conversion cancels
    state = update_timers(event, ctx.campaigns, state)  # drop-off starts/cancels, inactivity restarts
    state, entered = _enter(matched_campaigns(event, ctx.campaigns), view, state, now, ctx)
    state, sent = _send_due(view, state, now, ctx)
    return Outcome(state, entered + sent)


def _with_segment_change(view: PersonView, event: PersonEvent) -> PersonView:
    change = event.segment
    if event.kind != "segment" or change is None:
        return view
    if change.change == "entered":
        return replace(view, segments=view.segments | {change.segment_id})
    return replace(view, segments=view.segments - {change.segment_id})


def on_tick(view: PersonView, state: PersonState, now: datetime, ctx: Context) -> Outcome:
    state, fires = due_timers(state, now)  # drop-offs not recovered in time, inactivity reached
    state, entered = _enter(fires, view, state, now, ctx)
    state, sent = _send_due(view, state, now, ctx)
    return Outcome(state, entered + sent)


def on_broadcast(
    campaign_id: str, view: PersonView, state: PersonState, now: datetime, ctx: Context
) -> Outcome:
    campaign = ctx.campaigns.get(campaign_id)
    fire = broadcast_fire(campaign, view) if campaign else None
    state, entered = _enter([fire] if fire else [], view, state, now, ctx)
    state, sent = _send_due(view, state, now, ctx)
    return Outcome(state, entered + sent)


def _enter(
    fires: list[Fire], view: PersonView, state: PersonState, now: datetime, ctx: Context
) -> tuple[PersonState, list[Action]]:
    actions: list[Action] = []
    for fire in fires:
        campaign = ctx.campaigns.get(fire.campaign_id)
        if campaign is None:
            continue
        if not may_enter(campaign, state, now):
            actions.append(Skip("reentry", campaign.id, view.person_id))
            continue
        state, pending = add_pending(fire, campaign, state)
        if pending is None:  # the same trigger replayed while its send is still queued
            continue
        state = record_entry(campaign, state, now)
        if pending.due_ms > to_ms(now):
            actions.append(Scheduled("delay", campaign.id, view.person_id, from_ms(pending.due_ms)))
    return state, actions


def _send_due(
    view: PersonView, state: PersonState, now: datetime, ctx: Context
) -> tuple[PersonState, list[Action]]:
    actions: list[Action] = []
    for key, pending in due_pending(state, now):
        state, done = _send_one(key, pending, view, state, now, ctx)
        actions.extend(done)
    return state, actions


def _recheck(campaign: Campaign, pending: PendingSend, view: PersonView, state: PersonState) -> str | None:
    """Why the send must not go any more, checked at send time (None: it may go)."""
    trigger, cond = campaign.trigger, campaign.conditions
    if isinstance(trigger, SegmentTrigger) and (trigger.segment in view.segments) != (
        trigger.change == "entered"
    ):
        return "not_in_segment"
    if any(s not in view.segments for s in cond.in_segments) or any(
        s in view.segments for s in cond.not_in_segments
    ):
        return "not_in_segment"
    if state.conversions.get(campaign.id, -1) > pending.trigger.time_ms:
        return "converted"
    if not campaign.transactional and cond.subscription and ({cond.subscription, "all"} & view.unsubscribed):
        return "unsubscribed"
    return None


def _timezone(view: PersonView, ctx: Context) -> ZoneInfo:
    try:
        return ZoneInfo(view.timezone or ctx.campaigns.file.default_timezone)
    except (ZoneInfoNotFoundError, ValueError):  # a bad profile value must not block the send
        return ZoneInfo(ctx.campaigns.file.default_timezone)


def _send_one(
    key: str, pending: PendingSend, view: PersonView, state: PersonState, now: datetime, ctx: Context
) -> tuple[PersonState, list[Action]]:
    person = view.person_id
    campaign = ctx.campaigns.get(pending.campaign_id)
    state = state.copy()
    del state.pending[key]
    if campaign is None or not campaign.enabled:
        return state, [Skip("campaign_removed", pending.campaign_id, person)]
    reason = _recheck(campaign, pending, view, state)
    if reason:
        return state, [Skip(reason, campaign.id, person)]
    quiet = ctx.campaigns.quiet_hours_for(campaign)
    allowed = now if campaign.transactional else next_allowed(now, _timezone(view, ctx), quiet)
    if allowed > now and quiet is not None:
        if quiet.action == "drop":
            return state, [Skip("quiet_hours", campaign.id, person)]
        state.pending[key] = replace(pending, due_ms=to_ms(allowed))
        return state, [Scheduled("quiet_hours", campaign.id, person, allowed)]
    groups = candidates(campaign, view)
    if not groups:
        return state, [Skip("no_channel", campaign.id, person)]
    actions: list[Action] = []
    for group in groups:
        channel = group[0].channel
        if cap_reached(ctx.campaigns, campaign, channel, state, now):
            actions.append(Skip("frequency_cap", campaign.id, person))
            continue  # first_eligible falls back to the next reachable channel
        emitted = [_message(campaign, pending, d, view, now, ctx) for d in group]
        actions.extend(emitted)
        if any(isinstance(a, Emit) for a in emitted):
            state = record_send(ctx.campaigns, campaign, channel, state, now)
        if campaign.channels.strategy == "first_eligible":
            break
    return state, actions


def template_context(campaign: Campaign, pending: PendingSend, view: PersonView) -> dict[str, Any]:
    trigger = pending.trigger
    return {
        "person": {**view.attributes, "id": view.person_id},
        "event": {
            "name": trigger.name,
            "kind": trigger.kind,
            "time": from_ms(trigger.time_ms).isoformat(),
            "properties": trigger.properties,
        },
        "payload": trigger.properties if trigger.kind == "api" else {},
        "campaign": {"id": campaign.id, "name": campaign.name},
    }


def _message(
    campaign: Campaign, pending: PendingSend, dest: Destination, view: PersonView, now: datetime, ctx: Context
) -> Emit | Reject:
    trigger = pending.trigger
    msg_id = message_id(
        campaign.id, view.person_id, trigger.event_id, pending.slot, dest.channel, dest.device_key
    )
    content = render(campaign, dest.channel, template_context(campaign, pending, view))
    if isinstance(content, Rejection):
        return Reject(content, campaign.id, view.person_id, msg_id)
    token = None
    if ctx.tracking is not None:
        claims = {"m": msg_id, "c": campaign.id, "p": view.person_id, "ch": dest.channel}
        token = ctx.tracking.token(claims)
        content = add_tracking(content, dest.channel, ctx.tracking, claims)
    record = outbound_message(
        msg_id=msg_id,
        campaign=campaign,
        person_id=view.person_id,
        destination=dest,
        content=content,
        tracking_token=token,
        trigger=trigger,
        slot=pending.slot,
        now=now,
    )
    receipt = sent_receipt(record, view.identities, dest.device_key)
    return Emit(topic_for(dest.channel), view.person_id, record, receipt)
