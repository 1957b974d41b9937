"""Property filters (``where:``) on event properties or profile attributes.

``{plan: pro}`` is equality; ``{total: {gte: 50}}``, ``{country: {in: [IE, GB]}}``,
``{coupon: {exists: false}}`` use an operator. A dotted name reaches into nested objects
(``cart.total``). A filter on a missing property fails, except ``exists: false`` and ``ne``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = str | int | float | bool | None


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    eq: Scalar = None
    ne: Scalar = None
    in_: list[Scalar] | None = Field(default=None, alias="in")
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    exists: bool | None = None
    contains: Scalar = None

    @model_validator(mode="after")
    def _one_operator_at_least(self) -> Condition:
        if not self.model_fields_set:
            raise ValueError("a condition needs an operator: eq, ne, in, gt, gte, lt, lte, exists, contains")
        return self


Where = dict[str, Condition | Scalar]

_MISSING = object()


def lookup(values: Mapping[str, Any], dotted: str) -> Any:
    current: Any = values
    for part in dotted.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _holds(cond: Condition, value: Any) -> bool:
    ops = cond.model_fields_set
    if "exists" in ops and (value is not _MISSING) != cond.exists:
        return False
    if value is _MISSING:
        return ops <= {"exists", "ne"}
    checks = {
        "eq": lambda: value == cond.eq,
        "ne": lambda: value != cond.ne,
        "in_": lambda: value in (cond.in_ or []),
        "contains": lambda: isinstance(value, list | str) and cond.contains in value,
    }
    for op, check in checks.items():
        if op in ops and not check():
            return False
    number = _number(value)
    for op, bound, test in (
        ("gt", cond.gt, lambda n, b: n > b),
        ("gte", cond.gte, lambda n, b: n >= b),
        ("lt", cond.lt, lambda n, b: n < b),
        ("lte", cond.lte, lambda n, b: n <= b),
    ):
        if op in ops and (number is None or bound is None or not test(number, bound)):
            return False
    return True


def matches(where: Where, values: Mapping[str, Any]) -> bool:
    """True when every filter holds on ``values``."""
    for name, expected in where.items():
        value = lookup(values, name)
        if isinstance(expected, Condition):
            if not _holds(expected, value):
                return False
        elif value is _MISSING or value != expected:
            return False
    return True
