"""Campaign definitions: the documented YAML/JSON format (docs/campaigns.md), validated by pydantic.

A file is refused as a whole with every offending field named by its path
(``campaigns[0].trigger.event.name: Field required``), so a bad edit never half-applies.
Reloading compares two :class:`CampaignSet` values and reports added, changed and removed ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import time, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from services.trigger.triggers import (  # re-exported: the definition format in one import
    CHANNELS,
    ApiTrigger,
    BroadcastTrigger,
    Channel,
    DropoffTrigger,
    Duration,
    EventMatcher,
    EventTrigger,
    InactivityTrigger,
    LocationTrigger,
    SegmentTrigger,
    Strict,
    TimeZoneName,
    Trigger,
)

__all__ = [
    "CHANNELS",
    "ApiTrigger",
    "BroadcastTrigger",
    "Campaign",
    "CampaignError",
    "CampaignFile",
    "CampaignSet",
    "Channel",
    "DropoffTrigger",
    "EventMatcher",
    "EventTrigger",
    "InactivityTrigger",
    "LocationTrigger",
    "QuietHours",
    "SegmentTrigger",
    "load_campaigns",
    "parse_campaigns",
]


class Conditions(Strict):
    """Re-checked when the message is about to go, after any delay."""

    in_segments: list[str] = []
    not_in_segments: list[str] = []
    converted_by: EventMatcher | None = None  # such an event after the trigger cancels the send
    subscription: str | None = None  # a list name; unsubscribed from it (or 'all') cancels the send


class Cap(Strict):
    max: int = Field(ge=1)
    window: Duration


class QuietHours(Strict):
    start: time  # local time the quiet window begins, e.g. 21:00
    end: time  # local time it ends (may be the next day), e.g. 08:00
    action: Literal["hold", "drop"] = "hold"


class Reentry(Strict):
    mode: Literal["always", "once", "after"] = "always"
    after: Duration | None = None  # mode 'after': once per this long

    @model_validator(mode="after")
    def _after_needs_period(self) -> Reentry:
        if (self.mode == "after") != (self.after is not None):
            raise ValueError("'after' is required with mode 'after' and only then")
        return self


class ChannelRules(Strict):
    order: list[Channel] = Field(min_length=1)
    strategy: Literal["first_eligible", "all"] = "first_eligible"
    push_devices: Literal["all", "primary"] = "all"


class EmailTemplate(Strict):
    subject: str
    html: str | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _has_a_body(self) -> EmailTemplate:
        if self.html is None and self.text is None:
            raise ValueError("an email needs 'html', 'text' or both")
        return self


class TextTemplate(Strict):
    text: str


class PushTemplate(Strict):
    title: str
    body: str
    url: str | None = None


class WebhookTemplate(Strict):
    url: str
    body: str  # rendered, then sent as the request body (usually JSON)
    method: Literal["POST", "PUT"] = "POST"


class Templates(Strict):
    email: EmailTemplate | None = None
    sms: TextTemplate | None = None
    push: PushTemplate | None = None
    webpush: PushTemplate | None = None
    inapp: PushTemplate | None = None
    webhook: WebhookTemplate | None = None


class Campaign(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    name: str = ""
    enabled: bool = True
    transactional: bool = False  # no caps, quiet hours or marketing subscription; still needs a destination
    trigger: Trigger
    delay: Duration = timedelta(0)
    conditions: Conditions = Conditions()
    channels: ChannelRules
    templates: Templates
    caps: list[Cap] = []  # per person for this campaign
    quiet_hours: QuietHours | None = None  # None: the set's default
    reentry: Reentry = Reentry()

    @model_validator(mode="after")
    def _templates_for_channels(self) -> Campaign:
        missing = [c for c in self.channels.order if getattr(self.templates, c) is None]
        if missing:
            raise ValueError(f"templates missing for channels: {', '.join(missing)}")
        return self


class CampaignFile(Strict):
    default_timezone: TimeZoneName = "UTC"
    quiet_hours: QuietHours | None = None
    channel_caps: dict[Channel, list[Cap]] = {}  # per person per channel, across campaigns
    campaigns: list[Campaign] = []

    @model_validator(mode="after")
    def _unique_ids(self) -> CampaignFile:
        seen: set[str] = set()
        for campaign in self.campaigns:
            if campaign.id in seen:
                raise ValueError(f"duplicate campaign id {campaign.id!r}")
            seen.add(campaign.id)
        return self


class CampaignError(ValueError):
    """The definitions were refused; ``problems`` holds one 'path: message' per offending field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(file)"


@dataclass(frozen=True)
class CampaignSet:
    """A validated file: look campaigns up by id; compare with the previous set on reload."""

    file: CampaignFile

    @property
    def campaigns(self) -> dict[str, Campaign]:
        return {c.id: c for c in self.file.campaigns}

    def get(self, campaign_id: str) -> Campaign | None:
        return self.campaigns.get(campaign_id)

    def quiet_hours_for(self, campaign: Campaign) -> QuietHours | None:
        return campaign.quiet_hours or self.file.quiet_hours

    def diff(self, previous: CampaignSet | None) -> Diff:
        old = previous.campaigns if previous else {}
        new = self.campaigns
        return Diff(
            added=sorted(new.keys() - old.keys()),
            changed=sorted(k for k in new.keys() & old.keys() if new[k] != old[k]),
            removed=sorted(old.keys() - new.keys()),
        )


@dataclass(frozen=True)
class Diff:
    added: list[str]
    changed: list[str]
    removed: list[str]


def parse_campaigns(data: Any) -> CampaignSet:
    """Validate already-parsed YAML/JSON; raise :class:`CampaignError` naming every bad field."""
    from services.trigger.render import template_problems  # render imports definitions

    try:
        file = CampaignFile.model_validate(data)
    except ValidationError as exc:
        raise CampaignError([f"{_path(e['loc'])}: {e['msg']}" for e in exc.errors()]) from None
    problems = template_problems(file)
    if problems:
        raise CampaignError(problems)
    return CampaignSet(file)


def load_campaigns(source: str | Path) -> CampaignSet:
    """Read a ``.yaml``/``.yml``/``.json`` file, or YAML text (JSON is YAML too)."""
    text = source.read_text() if isinstance(source, Path) else source
    try:
        data = (
            json.loads(text)
            if isinstance(source, Path) and source.suffix == ".json"
            else yaml.safe_load(text)
        )
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise CampaignError([f"(file): not valid YAML/JSON: {exc}"]) from None
    return parse_campaigns(data or {})


@dataclass(frozen=True)
class Reload:
    """The outcome of re-reading the file: the set to use now, what changed, or why it was refused."""

    campaigns: CampaignSet | None
    diff: Diff | None
    problems: list[str]


def reload_campaigns(source: str | Path, previous: CampaignSet | None) -> Reload:
    """Re-read the definitions; a refused or unreadable file keeps the previous set running."""
    try:
        current = load_campaigns(source)
    except CampaignError as exc:
        return Reload(previous, None, exc.problems)
    except OSError as exc:
        return Reload(previous, None, [f"(file): cannot read: {exc.strerror}"])
    return Reload(current, current.diff(previous), [])


def _check(argv: list[str]) -> int:
    """``python -m services.trigger.definitions FILE...``: validate campaign files, list problems."""
    status = 0
    for name in argv:
        try:
            campaigns = load_campaigns(Path(name))
        except CampaignError as exc:
            status = 1
            print(f"{name}: refused")
            for problem in exc.problems:
                print(f"  {problem}")
        else:
            print(f"{name}: ok, {len(campaigns.campaigns)} campaigns")
    return status


if __name__ == "__main__":
    import sys

    sys.exit(_check(sys.argv[1:]))
