"""The condition language of segment definitions, as pydantic v2 models (data only, no evaluation).

A condition is a tree: ``all`` / ``any`` (lists) and ``not`` (one child) over leaves. Which model a
mapping is validated as is decided by the key it carries (``attribute``, ``event``, ``tag``,
``message``, ``location``, ``inside``, ``near``, ``session``, ``all``, ``any``, ``not``), so an error
is reported against the fields of the intended leaf rather than against every union member.
Semantics (windows, boundaries) are documented in docs/segments.md and implemented identically by
``evaluate.py`` (streaming) and ``sql.py`` (the ClickHouse oracle).
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeInt,
    StrictBool,
    StrictStr,
    Tag,
    model_validator,
)

from services.segmenter.timespec import (  # noqa: F401  (re-exported: the definition vocabulary)
    Comparable,
    Duration,
    Instant,
    Scalar,
    TimeBound,
    TimeRef,
    format_duration,
    instant_ms,
    parse_duration,
    to_instant,
)


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

    @cached_property
    def op(self) -> str:
        return next(name for name in OPS if getattr(self, name) is not None)

    @cached_property
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

    @cached_property
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


_LEAVES: dict[int, tuple[Any, list[Leaf]]] = {}  # id(tree) → (tree kept alive so ids are not reused, leaves)


def leaves(condition: Any) -> list[Leaf]:
    """Every leaf of a condition tree, depth first (memoised: evaluation asks on every fact)."""
    cached = _LEAVES.get(id(condition))
    if cached is not None and cached[0] is condition:
        return cached[1]
    found = _leaves(condition)
    _LEAVES[id(condition)] = (condition, found)
    return found


def _leaves(condition: Any) -> list[Leaf]:
    if isinstance(condition, AllOf):
        return [leaf for child in condition.all for leaf in _leaves(child)]
    if isinstance(condition, AnyOf):
        return [leaf for child in condition.any for leaf in _leaves(child)]
    if isinstance(condition, Not):
        return _leaves(condition.not_)
    return [condition]
