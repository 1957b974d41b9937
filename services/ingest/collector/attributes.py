"""Segment traits (and other loose JSON values) -> typed ``profile_update`` attributes.

Types follow the value: booleans are ``boolean``, numbers ``number``, ISO dates/times ``date``,
everything else ``string``; nested objects flatten to dotted names (``address.city``), lists
become JSON text, and ``null`` unsets the attribute. Segment's camelCase reserved traits get our
standard snake_case names.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

STANDARD_NAMES = {
    "firstName": "first_name",
    "lastName": "last_name",
    "createdAt": "created_at",
    "birthday": "birthday",
}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
MAX_DEPTH = 3


def canonical_date(text: str) -> str | None:
    """``2024-02-29`` stays; a date-time becomes UTC ISO with milliseconds; else ``None``."""
    try:
        if _DATE.match(text):
            return datetime.strptime(text, "%Y-%m-%d").date().isoformat()
        if _DATETIME.match(text):
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            return parsed.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except ValueError:
        return None
    return None


def typed(value: Any) -> tuple[str, str | None]:
    """A JSON value -> (attribute type, canonical text)."""
    if value is None:
        return "string", None
    if isinstance(value, bool):
        return "boolean", "true" if value else "false"
    if isinstance(value, int | float):
        return "number", repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        date = canonical_date(value)
        return ("date", date) if date else ("string", value)
    return "string", json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def attributes_from(traits: dict[str, Any], scope: str = "person") -> list[dict[str, Any]]:
    """Flatten ``traits`` into attribute records, in the traits' order."""
    out: list[dict[str, Any]] = []

    def walk(prefix: str, value: Any, depth: int) -> None:
        if isinstance(value, dict) and value and depth < MAX_DEPTH:
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner, depth + 1)
            return
        kind, text = typed(value)
        out.append({"name": prefix, "type": kind, "value": text, "scope": scope})

    for key, value in traits.items():
        walk(STANDARD_NAMES.get(key, key), value, 0)
    return out
