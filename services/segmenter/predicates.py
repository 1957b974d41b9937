"""Python semantics of a :class:`Predicate` on one JSON scalar, mirrored exactly by ``sql.py``.

Typing is strict and decided by the operand: a string operand matches only string values, a number
only numbers (never booleans), a boolean only booleans; dates compare against strings in ISO form
(``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM:SS[.fff]Z``), anything else is "not a date" and fails every
date test. A missing value behaves like JSON null: it fails every test except ``exists: false``.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from services.segmenter.conditions import Predicate, instant_ms

# The only date strings both sides accept (sql.py uses the same pattern before parsing).
# Years 1900-2299: ClickHouse's DateTime64 range (outside it, it clamps rather than refusing).
DATE_PATTERN = (
    r"^(19|2[0-2])[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,3})?Z)?$"
)
_DATE = re.compile(DATE_PATTERN)
EARTH_RADIUS_KM = 6371.0088


def is_number(value: Any) -> bool:
    """JSON numbers as ClickHouse reads them: integers beyond 64 bits come back as strings there, so
    they are not numbers here either (and non-finite floats are not JSON)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**64
    return isinstance(value, float) and math.isfinite(value)


def date_ms(value: Any) -> int | None:
    if not isinstance(value, str) or not _DATE.match(value):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return instant_ms(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def equal(value: Any, operand: Any) -> bool:
    if isinstance(operand, bool):
        return isinstance(value, bool) and value == operand
    if is_number(operand):
        return is_number(value) and float(value) == operand
    return isinstance(value, str) and value == operand


def _ordered(value: Any, operand: Any) -> float | int | None:
    """The value on the operand's scale (number or epoch ms), or None when it is not comparable."""
    if isinstance(operand, datetime):
        return date_ms(value)
    return float(value) if is_number(value) else None


def _bound(operand: Any) -> float | int:
    return instant_ms(operand) if isinstance(operand, datetime) else operand


def test(predicate: Predicate, value: Any) -> bool:
    op, operand = predicate.op, predicate.operand
    if op == "exists":
        return (value is not None) == operand
    if op == "equals":
        return equal(value, operand)
    if op == "in_":
        return any(equal(value, item) for item in operand)
    if op == "contains":
        return isinstance(value, str) and operand in value
    if op in ("before", "after"):
        ms = date_ms(value)
        return ms is not None and (ms < instant_ms(operand) if op == "before" else ms >= instant_ms(operand))
    probe = operand[0] if op == "between" else operand
    scaled = _ordered(value, probe)
    if scaled is None:
        return False
    if op == "between":
        return _bound(operand[0]) <= scaled <= _bound(operand[1])
    bound = _bound(operand)
    return {"gt": scaled > bound, "gte": scaled >= bound, "lt": scaled < bound, "lte": scaled <= bound}[op]


def compare_total(
    total: float,
    gt: float | None,
    gte: float | None,
    lt: float | None,
    lte: float | None,
    between: tuple[float, float] | None,
) -> bool:
    """Every given bound holds (used for ``sum`` tests)."""
    return (
        (gt is None or total > gt)
        and (gte is None or total >= gte)
        and (lt is None or total < lt)
        and (lte is None or total <= lte)
        and (between is None or between[0] <= total <= between[1])
    )


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance on a sphere; sql.py spells out the same formula (not greatCircleDistance,
    which ClickHouse approximates) so both sides agree."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dlat, dlon = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dlat / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))
