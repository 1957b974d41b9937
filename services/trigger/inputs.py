"""What the trigger core consumes, independent of the upstream record schemas.

The adapter turns an ``enriched`` event or a ``segment-membership`` change into a
:class:`PersonEvent`, and the latest profile it holds into a :class:`PersonView`. Both are
frozen so a decision function can never change its input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

EventKind = Literal["event", "tag", "location", "segment", "api"]
Transition = Literal["entered", "exited", "dwelled"]


@dataclass(frozen=True)
class LocationChange:
    transition: Transition
    region_id: str
    region_kind: str | None = None  # geofence, ibeacon
    dwell_seconds: float | None = None


@dataclass(frozen=True)
class SegmentChange:
    segment_id: str
    change: Literal["entered", "exited"]


@dataclass(frozen=True)
class PersonEvent:
    """One thing a person did or had happen to them; ``event_id`` is unique and stable on replay."""

    event_id: str
    person_id: str
    time: datetime  # event time, timezone-aware
    kind: EventKind
    name: str = ""  # event or tag name; api: the transactional trigger's name
    properties: dict[str, Any] = field(default_factory=dict)  # api: the transactional payload
    location: LocationChange | None = None
    segment: SegmentChange | None = None


@dataclass(frozen=True)
class Device:
    install_id: str
    platform: str  # ios, android, web
    push_token: str | None = None
    push_enabled: bool = False
    primary: bool = False


@dataclass(frozen=True)
class PersonView:
    """What the trigger knows about a person when it decides and when it sends."""

    person_id: str
    identities: dict[str, str] = field(default_factory=dict)  # external_user_id, install_id, ...
    email: str | None = None
    email_subscribed: bool = False
    phone: str | None = None
    devices: tuple[Device, ...] = ()
    timezone: str | None = None  # IANA name; None: the campaign set's default
    attributes: dict[str, Any] = field(default_factory=dict)
    segments: frozenset[str] = frozenset()
    unsubscribed: frozenset[str] = frozenset()  # subscription list names and/or channel names
