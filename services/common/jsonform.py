"""The JSON form of tagstream records, shared by ``tagstream produce`` and ``tagstream consume``.

Field names are the schema's; times are ISO-8601 UTC strings with milliseconds
(``2026-11-22T18:00:00.123Z``); ``properties`` is a JSON object (text inside Avro); bytes
are base64. :func:`to_json` writes every field in schema order, so a consumed file produces
again unchanged. See ``schemas/README.md``.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from services.common.schemas import SchemaCatalogue, default_catalogue

JSON_TEXT_FIELDS = frozenset({"properties"})  # Avro strings that hold a JSON object


class JsonFormError(ValueError):
    """A JSON record does not fit its schema; the message names the field."""


def parse_time(value: Any, path: str = "time") -> int:
    """ISO-8601 with a zone (or epoch milliseconds) -> epoch milliseconds."""
    if isinstance(value, bool):
        raise JsonFormError(f"{path}: expected an ISO-8601 time, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise JsonFormError(f"{path}: {value!r} is not an ISO-8601 time") from None
    else:
        raise JsonFormError(f"{path}: expected an ISO-8601 time, got {type(value).__name__}")
    if parsed.tzinfo is None:
        raise JsonFormError(f"{path}: {value!r} has no time zone (add Z or +00:00)")
    return round(parsed.timestamp() * 1000)


def format_time(value: datetime | int) -> str:
    if isinstance(value, int):
        value = datetime.fromtimestamp(value / 1000, tz=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_timestamp(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis"


def _from_json(schema: Any, value: Any, path: str, field: str) -> Any:
    if isinstance(schema, list):  # union: our unions are ["null", T]
        if value is None:
            if "null" in schema:
                return None
            raise JsonFormError(f"{path}: must not be null")
        branches = [s for s in schema if s != "null"]
        if len(branches) != 1:
            raise JsonFormError(f"{path}: unsupported union")
        return _from_json(branches[0], value, path, field)
    if value is None:
        raise JsonFormError(f"{path}: must not be null")
    if _is_timestamp(schema):
        return parse_time(value, path)
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            return _record_from_json(schema, value, path)
        if kind == "array":
            if not isinstance(value, list):
                raise JsonFormError(f"{path}: expected a list")
            return [_from_json(schema["items"], v, f"{path}[{i}]", field) for i, v in enumerate(value)]
        if kind == "map":
            if not isinstance(value, dict):
                raise JsonFormError(f"{path}: expected an object")
            return {k: _from_json(schema["values"], v, f"{path}.{k}", field) for k, v in value.items()}
        if kind == "enum":
            if value not in schema["symbols"]:
                raise JsonFormError(f"{path}: {value!r} is not one of {', '.join(schema['symbols'])}")
            return value
        return _from_json(kind, value, path, field)
    if schema == "string" and field in JSON_TEXT_FIELDS:
        if not isinstance(value, dict):
            raise JsonFormError(f"{path}: expected a JSON object")
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if schema == "bytes":
        try:
            return base64.b64decode(value, validate=True)
        except (ValueError, TypeError):
            raise JsonFormError(f"{path}: expected base64 text") from None
    expected = {
        "string": str,
        "boolean": bool,
        "long": int,
        "int": int,
        "double": (int, float),
        "float": (int, float),
    }
    python_type = expected.get(schema)
    if python_type is None:
        raise JsonFormError(f"{path}: unsupported schema type {schema!r}")
    if (isinstance(value, bool) and schema != "boolean") or not isinstance(value, python_type):
        raise JsonFormError(f"{path}: expected {schema}, got {type(value).__name__} {value!r}")
    return float(value) if schema in ("double", "float") else value


def _record_from_json(schema: dict[str, Any], obj: Any, path: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise JsonFormError(f"{path or 'record'}: expected a JSON object")
    known = {f["name"] for f in schema["fields"]}
    unknown = sorted(set(obj) - known)
    if unknown:
        raise JsonFormError(f"{path + '.' if path else ''}{unknown[0]}: unknown field")
    out: dict[str, Any] = {}
    for f in schema["fields"]:
        name = f["name"]
        fpath = f"{path}.{name}" if path else name
        if name in obj:
            out[name] = _from_json(f["type"], obj[name], fpath, name)
        elif "default" in f:
            default = f["default"]
            out[name] = (
                json.loads(default) if name in JSON_TEXT_FIELDS and isinstance(default, str) else default
            )
            if name in JSON_TEXT_FIELDS:
                out[name] = json.dumps(out[name], separators=(",", ":"))
        else:
            raise JsonFormError(f"{fpath}: required field is missing")
    return out


def _to_json(schema: Any, value: Any, field: str) -> Any:
    if value is None:
        return None
    if isinstance(schema, list):
        return _to_json(next(s for s in schema if s != "null"), value, field)
    if _is_timestamp(schema):
        return format_time(value)
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            return {f["name"]: _to_json(f["type"], value.get(f["name"]), f["name"]) for f in schema["fields"]}
        if kind == "array":
            return [_to_json(schema["items"], v, field) for v in value]
        if kind == "map":
            return {k: _to_json(schema["values"], v, field) for k, v in value.items()}
        if kind == "enum":
            return value
        return _to_json(kind, value, field)
    if schema == "string" and field in JSON_TEXT_FIELDS:
        return json.loads(value)
    if schema == "bytes":
        return base64.b64encode(value).decode()
    return value


class JsonForm:
    def __init__(self, catalogue: SchemaCatalogue | None = None) -> None:
        self.catalogue = catalogue or default_catalogue()

    def from_json(self, record_type: str, obj: Any) -> dict[str, Any]:
        """A parsed JSON object -> a record ready for :meth:`Serde.encode`."""
        return _record_from_json(self.catalogue.current(record_type).raw, obj, "")

    def to_json(self, record_type: str, record: dict[str, Any]) -> dict[str, Any]:
        """A decoded record -> its JSON object, every field in schema order."""
        return _to_json(self.catalogue.current(record_type).raw, record, "")


def dumps(obj: Any) -> str:
    """The canonical JSON line: compact, UTF-8, field order kept."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
