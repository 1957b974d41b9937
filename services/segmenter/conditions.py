"""The condition language of segment definitions, as pydantic v2 models (data only, no evaluation).

A condition is a tree: ``all`` / ``any`` (lists) and ``not`` (one child) over leaves. Which model a
mapping is validated as is decided by the key it carries (``attribute``, ``event``, ``tag``,
``message``, ``location``, ``inside``, ``near``, ``session``, ``all``, ``any``, ``not``), so an error
is reported against the fields of the intended leaf rather than against every union member.
Semantics (windows, boundaries) are documented in docs/segments.md and implemented identically by
``evaluate.py`` (streaming) and ``sql.py`` (the ClickHouse oracle).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeInt,
    PlainSerializer,
    StrictBool,
    StrictStr,
    Tag,
    model_validator,
)

_UNITS_MS = {
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
    "mo": 30 * 86_400_000,
}
_DURATION = re.compile(r"^\s*(\d+)\s*(mo|s|m|h|d|w)\s*$")


def parse_duration(raw: Any) -> int:
    """``"7d"`` → milliseconds. Units s, m, h, d, w and mo (= 30 days); a month is fixed so SQL agrees."""
    if isinstance(raw, str) and (match := _DURATION.match(raw)):
        ms = int(match.group(1)) * _UNITS_MS[match.group(2)]
        if ms > 0:
            return ms
    raise ValueError(f"expected a positive duration such as 30m, 24h, 7d, 2w, 6mo; got {raw!r}")


def format_duration(ms: int) -> str:
    for unit in ("mo", "w", "d", "h", "m", "s"):
        if ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms // 1000}s"


def to_instant(raw: Any) -> datetime:
    """Dates are midnight UTC; naive datetimes are UTC; strings are ISO 8601."""
    if isinstance(raw, str):
        try:
            raw = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(f"expected an ISO date or datetime, got {raw!r}") from None
    if isinstance(raw, datetime):
        return raw if raw.tzinfo else raw.replace(tzinfo=UTC)
    if isinstance(raw, date):
        return datetime(raw.year, raw.month, raw.day, tzinfo=UTC)
    raise ValueError(f"expected a date or datetime, got {raw!r}")


def instant_ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // _ms


_ms = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)

Duration = Annotated[int, BeforeValidator(parse_duration), PlainSerializer(format_duration)]
Instant = Annotated[datetime, BeforeValidator(to_instant)]


@dataclass(frozen=True)
class TimeRef:
    """A bound in time: an absolute instant (``at_ms``) or ``ago_ms`` before the evaluation time."""

    at_ms: int | None = None
    ago_ms: int | None = None

    def resolve(self, now_ms: int) -> int:
        return self.at_ms if self.at_ms is not None else now_ms - (self.ago_ms or 0)


def _time_ref(raw: Any) -> TimeRef:
    if isinstance(raw, TimeRef):
        return raw
    if isinstance(raw, str) and _DURATION.match(raw):
        return TimeRef(ago_ms=parse_duration(raw))
    return TimeRef(at_ms=instant_ms(to_instant(raw)))


def _dump_time_ref(ref: TimeRef) -> str:
    if ref.ago_ms is not None:
        return format_duration(ref.ago_ms)
    return datetime.fromtimestamp(ref.at_ms / 1000, UTC).isoformat()


TimeBound = Annotated[TimeRef, BeforeValidator(_time_ref), PlainSerializer(_dump_time_ref)]


def _scalar(raw: Any) -> Any:
    return raw.isoformat() if isinstance(raw, date) else raw  # YAML turns 2025-01-01 into a date


Scalar = Annotated[StrictBool | float | StrictStr, BeforeValidator(_scalar)]
Number = float


def _number_or_instant(raw: Any) -> Any:
    if isinstance(raw, bool):
        raise ValueError("expected a number or a date, got a boolean")
    if isinstance(raw, int | float):
        return float(raw)
    return to_instant(raw)


Comparable = Annotated[float | datetime, BeforeValidator(_number_or_instant)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Predicate(_Model):
    """Exactly one test on one JSON scalar (an attribute's latest value or an event property)."""

    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1)
    contains: StrictStr | None = None
    exists: StrictBool | None = None
    gt: Comparable | None = None
    gte: Comparable | None = None
    lt: Comparable | None = None
    lte: Comparable | None = None
    between: tuple[Comparable, Comparable] | None = None
    before: Instant | None = None
    after: Instant | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Predicate:
        ops = [name for name in OPS if getattr(self, name) is not None]
        if len(ops) != 1:
            raise ValueError(
                f"needs exactly one of {', '.join(o.rstrip('_') for o in OPS)}; got {ops or 'none'}"
            )
        if self.between is not None and type(self.between[0]) is not type(self.between[1]):
            raise ValueError("between needs two numbers or two dates")
        return self

    @property
    def op(self) -> str:
        return next(name for name in OPS if getattr(self, name) is not None)

    @property
    def operand(self) -> Any:
        return getattr(self, self.op)


OPS = ("equals", "in_", "contains", "exists", "gt", "gte", "lt", "lte", "between", "before", "after")


class AttributeCondition(Predicate):
    attribute: StrictStr = Field(min_length=1)


class PropertyFilter(Predicate):
    property: StrictStr = Field(min_length=1)


class SumTest(_Model):
    """``sum: {property: revenue, gte: 100}``: the sum of a numeric property over the window."""

    property: StrictStr = Field(min_length=1)
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    between: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _some_test(self) -> SumTest:
        if all(getattr(self, name) is None for name in ("gt", "gte", "lt", "lte", "between")):
            raise ValueError("sum needs at least one of gt, gte, lt, lte, between")
        return self


class Occurrence(_Model):
    """``first: {before: 2025-01-01}`` or ``last: {before: 30d}`` (a duration means that long ago)."""

    before: TimeBound | None = None
    after: TimeBound | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> Occurrence:
        if self.before is None and self.after is None:
            raise ValueError("needs before and/or after")
        return self


class Counted(_Model):
    """Fields shared by leaves that count occurrences of something in an optional window."""

    within: Duration | None = None
    at_least: NonNegativeInt | None = None
    at_most: NonNegativeInt | None = None
    never: StrictBool = False
    first: Occurrence | None = None
    last: Occurrence | None = None

    @model_validator(mode="after")
    def _one_measure(self) -> Counted:
        counting = self.at_least is not None or self.at_most is not None
        occurrence = self.first is not None or self.last is not None
        summing = getattr(self, "sum", None) is not None
        if self.never and counting:
            raise ValueError("never cannot be combined with at_least/at_most")
        if sum([counting or self.never, occurrence, summing]) > 1:
            raise ValueError("use one measure: a count (at_least/at_most/never), sum, or first/last")
        if occurrence and self.within is not None:
            raise ValueError("first/last look at all history; give the time in before/after, not within")
        if self.at_least is not None and self.at_most is not None and self.at_least > self.at_most:
            raise ValueError("at_least is greater than at_most")
        return self

    @property
    def count_range(self) -> tuple[int, int | None]:
        """(minimum, maximum or None) number of occurrences; a bare leaf means at least once."""
        if self.never:
            return 0, 0
        if self.at_least is None and self.at_most is None:
            return 1, None
        return self.at_least or 0, self.at_most


class EventCondition(Counted):
    event: StrictStr = Field(min_length=1)
    where: list[PropertyFilter] = []
    sum: SumTest | None = None


class TagCondition(Counted):
    tag: StrictStr = Field(min_length=1)
    value: StrictStr | None = None


MessageAction = Literal["received", "opened", "clicked", "bounced", "unsubscribed"]

# Receipt statuses (schemas/README.md) that count as each interaction.
ACTION_STATUSES: dict[str, tuple[str, ...]] = {
    "received": ("sent", "delivered"),
    "opened": ("opened", "read", "viewed"),
    "clicked": ("clicked", "link_clicked"),
    "bounced": ("bounced", "soft_bounced", "hard_bounced", "undelivered"),
    "unsubscribed": ("unsubscribed",),
}


class MessageCondition(Counted):
    message: MessageAction
    channel: StrictStr | None = None
    campaign: StrictStr | None = None


class LocationCondition(Counted):
    location: StrictStr = Field(min_length=1)  # a region (geofence / beacon) id
    action: Literal["entered", "dwelled"] = "entered"


class SessionCondition(Counted):
    session: Literal["started"]


class InsideCondition(_Model):
    inside: StrictStr = Field(min_length=1)


class Point(_Model):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    km: float = Field(gt=0)


class NearCondition(_Model):
    near: Point


class AllOf(_Model):
    all: list[Condition] = Field(min_length=1)


class AnyOf(_Model):
    any: list[Condition] = Field(min_length=1)


class Not(_Model):
    not_: Condition = Field(alias="not")


CountedLeaf = EventCondition | TagCondition | MessageCondition | LocationCondition | SessionCondition
Leaf = AttributeCondition | CountedLeaf | InsideCondition | NearCondition

# Discriminating key → model. Tags are capitalised so they never collide with field names in the
# error paths that definitions.py prints (pydantic puts the tag into an error's location).
_BY_KEY: dict[str, type[_Model]] = {
    "all": AllOf,
    "any": AnyOf,
    "not": Not,
    "attribute": AttributeCondition,
    "event": EventCondition,
    "tag": TagCondition,
    "message": MessageCondition,
    "location": LocationCondition,
    "session": SessionCondition,
    "inside": InsideCondition,
    "near": NearCondition,
}
TAGS = {model.__name__ for model in _BY_KEY.values()}


def _which(raw: Any) -> str | None:
    if isinstance(raw, BaseModel):
        return type(raw).__name__
    if isinstance(raw, dict):
        for key, model in _BY_KEY.items():
            if key in raw:
                return model.__name__
    return None


Condition = Annotated[
    Annotated[AllOf, Tag("AllOf")]
    | Annotated[AnyOf, Tag("AnyOf")]
    | Annotated[Not, Tag("Not")]
    | Annotated[AttributeCondition, Tag("AttributeCondition")]
    | Annotated[EventCondition, Tag("EventCondition")]
    | Annotated[TagCondition, Tag("TagCondition")]
    | Annotated[MessageCondition, Tag("MessageCondition")]
    | Annotated[LocationCondition, Tag("LocationCondition")]
    | Annotated[SessionCondition, Tag("SessionCondition")]
    | Annotated[InsideCondition, Tag("InsideCondition")]
    | Annotated[NearCondition, Tag("NearCondition")],
    Discriminator(
        _which,
        custom_error_type="unknown_condition",
        custom_error_message=f"a condition needs one of the keys {', '.join(_BY_KEY)}",
    ),
]

for _model in (AllOf, AnyOf, Not):
    _model.model_rebuild()


def leaves(condition: Any) -> list[Leaf]:
    """Every leaf of a condition tree, depth first."""
    if isinstance(condition, AllOf):
        return [leaf for child in condition.all for leaf in leaves(child)]
    if isinstance(condition, AnyOf):
        return [leaf for child in condition.any for leaf in leaves(child)]
    if isinstance(condition, Not):
        return leaves(condition.not_)
    return [condition]
