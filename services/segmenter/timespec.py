"""Field types for segment definitions: durations, instants, relative time bounds, scalar operands.

Durations have fixed lengths (a month is 30 days) so streaming and the SQL oracle agree; dates are
midnight UTC and naive datetimes are UTC; a ``TimeRef`` is either an absolute instant or "that long
before the evaluation time".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, StrictBool, StrictStr

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


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def instant_ms(moment: datetime) -> int:
    """Epoch milliseconds, exactly (integer arithmetic, sub-millisecond parts dropped toward the past)."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


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
    return (EPOCH + timedelta(milliseconds=ref.at_ms or 0)).isoformat()


TimeBound = Annotated[TimeRef, BeforeValidator(_time_ref), PlainSerializer(_dump_time_ref)]


def _scalar(raw: Any) -> Any:
    return raw.isoformat() if isinstance(raw, date) else raw  # YAML turns 2025-01-01 into a date


Scalar = Annotated[StrictBool | float | StrictStr, BeforeValidator(_scalar)]


def _number_or_instant(raw: Any) -> Any:
    if isinstance(raw, bool):
        raise ValueError("expected a number or a date, got a boolean")
    if isinstance(raw, int | float):
        return float(raw)
    return to_instant(raw)


Comparable = Annotated[float | datetime, BeforeValidator(_number_or_instant)]
