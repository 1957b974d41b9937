"""Folding a merged-away person's trigger state into the survivor's (docs/campaigns.md, "Merges").

When the enricher merges person A into S (an anonymous install logs in), everything the trigger
remembers about A is about S from then on. What folding means, piece by piece:

- **pending sends**: A's go to S with their original due time and trigger (so the message id,
  a hash of campaign, *person*, trigger event, slot, channel and device, is computed for S at send
  time: deterministic, and rendered and addressed with S's profile then). A send both persons have
  queued under the same key (a broadcast occurrence) stays once, S's;
- **drop-off / inactivity timers** (one per campaign): the one started by the later event wins,
  as a later start or activity restarts the timer of one person (ties: S's);
- **send log** (frequency caps): both logs, in time order: A's sends count against S's caps;
- **entries** (re-entry) and **conversions**: per campaign the later time, so `once` means once
  for the merged person and a conversion of either cancels sends triggered before it.

The adapter's part (seen input ids, events waiting for a profile) is folded in ``stages.py``.
"""

from __future__ import annotations

from services.trigger.state import PersonState, Timer


def fold(survivor: PersonState, merged: PersonState) -> PersonState:
    """``survivor``'s state with ``merged``'s folded in; neither argument is changed."""
    timers = dict(merged.timers)
    for campaign_id, timer in survivor.timers.items():
        timers[campaign_id] = _later(timer, timers.get(campaign_id))
    return PersonState(
        pending={**merged.pending, **survivor.pending},
        timers=dict(sorted(timers.items())),
        sends=sorted([*survivor.sends, *merged.sends], key=lambda s: (s.time_ms, s.channel, s.campaign_id)),
        entries=_latest(survivor.entries, merged.entries),
        conversions=_latest(survivor.conversions, merged.conversions),
    )


def _later(survivor: Timer, merged: Timer | None) -> Timer:
    if merged is not None and merged.trigger.time_ms > survivor.trigger.time_ms:
        return merged
    return survivor


def _latest(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: max(v for v in (a.get(k), b.get(k)) if v is not None) for k in sorted({*a, *b})}
