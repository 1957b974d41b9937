"""Campaign triggers and the building blocks of the definition format (durations, matchers).

Each trigger kind is one model, told apart by ``kind``; ``event`` and ``tag`` share one model.
Unknown fields are refused everywhere (``extra="forbid"``) so a misspelt option is an error.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from services.trigger.filters import Where

CHANNELS = ("email", "sms", "push", "webpush", "inapp", "webhook")
Channel = Literal["email", "sms", "push", "webpush", "inapp", "webhook"]

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(value: Any) -> Any:
    """``90s``, ``15m``, ``1h``, ``7d``, ``2w`` or a number of seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("a duration is a number with a unit s, m, h, d or w, e.g. '1h'")
        return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    return value


def _timezone(value: Any) -> Any:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError("not an IANA timezone name, e.g. 'Europe/Dublin'") from None
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
TimeZoneName = Annotated[str, BeforeValidator(_timezone)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventMatcher(Strict):
    """An event or tag by name, with optional property filters."""

    kind: Literal["event", "tag"] = "event"
    name: str = Field(min_length=1)
    where: Where = {}


class EventTrigger(EventMatcher):
    kind: Literal["event", "tag"]  # required here: it picks the trigger type


class SegmentTrigger(Strict):
    kind: Literal["segment"]
    segment: str = Field(min_length=1)
    change: Literal["entered", "exited"] = "entered"


class LocationTrigger(Strict):
    kind: Literal["location"]
    regions: list[str] = Field(min_length=1)
    transition: Literal["entered", "exited", "dwelled"] = "entered"
    min_dwell: Duration | None = None  # dwelled: only when the device reports at least this long


class DropoffTrigger(Strict):
    """A happened and B did not follow within T (started a form, left a cart)."""

    kind: Literal["dropoff"]
    start: EventMatcher
    complete: EventMatcher
    within: Duration


class InactivityTrigger(Strict):
    """No activity (any event, or the matching ones) for ``after`` since the last one."""

    kind: Literal["inactivity"]
    after: Duration
    activity: EventMatcher | None = None


class ApiTrigger(Strict):
    """A transactional send requested through the API, carrying a payload."""

    kind: Literal["api"]
    name: str = Field(min_length=1)


class BroadcastTrigger(Strict):
    """Everyone in a segment (optionally narrowed by profile attributes) at a given time."""

    kind: Literal["broadcast"]
    segment: str = Field(min_length=1)
    at: datetime
    where: Where = {}  # on profile attributes, e.g. {area: "D15"}

    @model_validator(mode="after")
    def _aware(self) -> BroadcastTrigger:
        if self.at.tzinfo is None:
            raise ValueError("'at' needs a timezone, e.g. 2026-11-23T09:00:00Z")
        return self


Trigger = Annotated[
    EventTrigger
    | SegmentTrigger
    | LocationTrigger
    | DropoffTrigger
    | InactivityTrigger
    | ApiTrigger
    | BroadcastTrigger,
    Field(discriminator="kind"),
]
