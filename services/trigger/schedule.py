"""When things happen: drop-off and inactivity timers, send delays, quiet hours, broadcasts.

All times are decided from event time and the ``now`` passed in, never the wall clock, so a
replay decides the same way. Quiet hours are evaluated in the person's IANA timezone with
zoneinfo: the window opens at the local wall-clock time ``end`` on the right local date,
whatever the UTC offset is that day (daylight-saving changes included).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.trigger.definitions import (
    BroadcastTrigger,
    Campaign,
    CampaignSet,
    DropoffTrigger,
    InactivityTrigger,
    QuietHours,
)
from services.trigger.inputs import PersonEvent
from services.trigger.match import Fire, event_matches, ref_of
from services.trigger.state import PendingSend, PersonState, Timer, pending_key, to_ms


def update_timers(event: PersonEvent, campaigns: CampaignSet, state: PersonState) -> PersonState:
    """Start, restart or cancel drop-off and inactivity timers for this event.

    Drop-off: A starts (or restarts, for a later A) a check at A+T; B cancels it only if B's
    event time falls within [A, A+T] — a late B leaves the check to fire.
    Inactivity: every matching activity restarts the clock at its time + ``after``.
    """
    state = state.copy()
    when = to_ms(event.time)
    for campaign in campaigns.file.campaigns:
        trigger, current = campaign.trigger, state.timers.get(campaign.id)
        if not campaign.enabled:
            continue
        if isinstance(trigger, DropoffTrigger):
            if (
                current is not None
                and event_matches(trigger.complete, event)
                and current.trigger.time_ms <= when <= current.due_ms
            ):
                del state.timers[campaign.id]
                current = None
            if event_matches(trigger.start, event) and (current is None or current.trigger.time_ms <= when):
                state.timers[campaign.id] = Timer(when + _ms(trigger.within), ref_of(event))
        elif isinstance(trigger, InactivityTrigger):
            active = event.kind in ("event", "tag") and (
                trigger.activity is None or event_matches(trigger.activity, event)
            )
            if active and (current is None or current.trigger.time_ms <= when):
                state.timers[campaign.id] = Timer(when + _ms(trigger.after), ref_of(event))
    return state


def due_timers(state: PersonState, now: datetime) -> tuple[PersonState, list[Fire]]:
    """Timers whose check is due: each fires its campaign with the event that started it."""
    state = state.copy()
    fires: list[Fire] = []
    for campaign_id, timer in sorted(state.timers.items()):
        if timer.due_ms <= to_ms(now):
            del state.timers[campaign_id]
            fires.append(Fire(campaign_id, timer.trigger))
    return state, fires


def add_pending(fire: Fire, campaign: Campaign, state: PersonState) -> tuple[PersonState, PendingSend | None]:
    """Queue the send at trigger time + delay; None when this very trigger is already queued."""
    key = pending_key(fire.campaign_id, fire.trigger.event_id, fire.slot)
    if key in state.pending:
        return state, None
    state = state.copy()
    pending = PendingSend(
        fire.campaign_id, fire.trigger, fire.trigger.time_ms + _ms(campaign.delay), fire.slot
    )
    state.pending[key] = pending
    return state, pending


def due_pending(state: PersonState, now: datetime) -> list[tuple[str, PendingSend]]:
    """Pending sends due at ``now``, oldest first (ties in a stable key order)."""
    now_ms = to_ms(now)
    due = [(k, p) for k, p in state.pending.items() if p.due_ms <= now_ms]
    return sorted(due, key=lambda item: (item[1].due_ms, item[0]))


def in_quiet_hours(moment: datetime, tz: ZoneInfo, quiet: QuietHours) -> bool:
    local = moment.astimezone(tz).time().replace(tzinfo=None)
    if quiet.start <= quiet.end:
        return quiet.start <= local < quiet.end
    return local >= quiet.start or local < quiet.end  # the window spans midnight


def _local(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The first instant at or after local ``day`` ``at`` (a time skipped by DST maps past the gap)."""
    # fold=0 reads an ambiguous (repeated) time as its first occurrence and a skipped time with
    # the offset before the change, which lands just after the gap.
    return datetime.combine(day, at).replace(tzinfo=tz, fold=0).astimezone(UTC)


def next_allowed(moment: datetime, tz: ZoneInfo, quiet: QuietHours | None) -> datetime:
    """``moment`` if sending is allowed then; else when the quiet window next ends, local time."""
    if quiet is None or not in_quiet_hours(moment, tz, quiet):
        return moment
    local_day = moment.astimezone(tz).date()
    for offset in (0, 1):
        opening = _local(local_day + timedelta(days=offset), quiet.end, tz)
        if opening > moment:
            return opening
    raise AssertionError("a quiet window always ends within a day")  # pragma: no cover


def broadcasts_due(campaigns: CampaignSet, after: datetime | None, until: datetime) -> list[Campaign]:
    """Broadcast campaigns whose time falls in (after, until]: the adapter sends each once per tick range."""
    due = []
    for campaign in campaigns.file.campaigns:
        at = campaign.trigger.at if isinstance(campaign.trigger, BroadcastTrigger) else None
        if campaign.enabled and at is not None and (after is None or at > after) and at <= until:
            due.append(campaign)
    return due


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)
