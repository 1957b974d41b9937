"""Frequency caps and re-entry rules, exact over sliding windows.

A cap ``{max: N, window: W}`` allows a send at ``now`` when fewer than N counted sends of the
same scope happened in (now - W, now]. Scopes: per person per channel (``channel_caps``,
across campaigns) and per person per campaign (``caps``). Transactional sends are neither
capped nor counted. The log keeps only what the longest window can still see.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from services.trigger.definitions import Campaign, CampaignSet, Cap
from services.trigger.state import PersonState, SendRecord, to_ms


def _count(state: PersonState, since_ms: int, channel: str | None, campaign_id: str | None) -> int:
    return sum(
        1
        for s in state.sends
        if s.time_ms > since_ms
        and (channel is None or s.channel == channel)
        and (campaign_id is None or s.campaign_id == campaign_id)
    )


def _over(cap: Cap, state: PersonState, now_ms: int, channel: str | None, campaign_id: str | None) -> bool:
    return _count(state, now_ms - int(cap.window.total_seconds() * 1000), channel, campaign_id) >= cap.max


def cap_reached(
    campaigns: CampaignSet, campaign: Campaign, channel: str, state: PersonState, now: datetime
) -> str | None:
    """The cap that forbids this send now (a short description), or None when it may go."""
    if campaign.transactional:
        return None
    now_ms = to_ms(now)
    for cap in campaigns.file.channel_caps.get(channel, []):  # type: ignore[call-overload]
        if _over(cap, state, now_ms, channel, None):
            return f"channel {channel}: {cap.max} per {cap.window}"
    for cap in campaign.caps:
        if _over(cap, state, now_ms, None, campaign.id):
            return f"campaign: {cap.max} per {cap.window}"
    return None


def record_send(
    campaigns: CampaignSet, campaign: Campaign, channel: str, state: PersonState, now: datetime
) -> PersonState:
    """Log a send and forget sends no configured window can see any more."""
    state = state.copy()
    now_ms = to_ms(now)
    if not campaign.transactional:
        state.sends.append(SendRecord(now_ms, channel, campaign.id))
    horizon_ms = int(_longest_window(campaigns).total_seconds() * 1000)
    state.sends = [s for s in state.sends if s.time_ms > now_ms - horizon_ms]
    return state


def _longest_window(campaigns: CampaignSet) -> timedelta:
    windows = [cap.window for caps in campaigns.file.channel_caps.values() for cap in caps]
    windows += [cap.window for c in campaigns.file.campaigns for cap in c.caps]
    return max(windows, default=timedelta(0))


def may_enter(campaign: Campaign, state: PersonState, now: datetime) -> bool:
    """Re-entry: always; once per person; or once per ``after`` since the last entry."""
    last = state.entries.get(campaign.id)
    if campaign.reentry.mode == "always" or last is None:
        return True
    if campaign.reentry.mode == "once":
        return False
    assert campaign.reentry.after is not None  # enforced by the definition
    return to_ms(now) - last >= int(campaign.reentry.after.total_seconds() * 1000)


def record_entry(campaign: Campaign, state: PersonState, now: datetime) -> PersonState:
    state = state.copy()
    state.entries[campaign.id] = to_ms(now)
    return state
