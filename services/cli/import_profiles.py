"""``tagstream import profiles FILE.csv``: CSV rows -> ``profile_update`` records -> Kafka.

Columns map to identifiers or to typed attributes. Types come from the header (``age:number``,
``signup:date``, ``vip:boolean``; no suffix means string) or from a mapping file (YAML or JSON:
``{"columns": {"Customer ID": "external_user_id", "Age": "age:number", "Notes": "skip"}}``).
Columns named like an identifier (``external_user_id``/``user_id``, ``email``, ``phone``,
``install_id``, ``anonymous_id``) identify the person; every row needs one. Empty cells are left
out (they do not unset). A row with a bad value is rejected with its line number and the column;
the valid rows are produced. ``message_id`` is derived from the file's content and the line, so
importing the same file twice is deduplicated by ingest.
"""

from __future__ import annotations

import csv
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.cli.produce import BadLine, PreparedRecord
from services.common.kafka import record_key
from services.common.serde import Serde, SerdeError
from services.ingest.collector.attributes import canonical_date

IDENTITY_COLUMNS = {
    "external_user_id": "external_user_id",
    "user_id": "external_user_id",
    "userid": "external_user_id",
    "email": "email",
    "phone": "phone",
    "install_id": "install_id",
    "anonymous_id": "anonymous_id",
}
TYPES = ("string", "number", "boolean", "date")
TRUE, FALSE = {"true", "yes", "1", "y"}, {"false", "no", "0", "n"}


class MappingError(ValueError):
    """The header or the mapping file cannot be used; nothing is imported."""


@dataclass(frozen=True)
class Column:
    header: str
    target: str  # identity field or attribute name
    type: str
    identity: bool


def parse_target(header: str, spec: str) -> Column | None:
    if spec.strip().lower() == "skip":
        return None
    name, _, kind = spec.strip().partition(":")
    kind = kind.strip().lower() or "string"
    if kind not in TYPES:
        raise MappingError(f"column {header!r}: type {kind!r} is not one of {', '.join(TYPES)}")
    identity = IDENTITY_COLUMNS.get(name.strip().lower())
    if identity:
        return Column(header, identity, "string", True)
    if not name.strip():
        raise MappingError(f"column {header!r}: no attribute name")
    return Column(header, name.strip(), kind, False)


def columns_for(headers: list[str], mapping_file: Path | None) -> list[Column]:
    mapping: dict[str, str] = {}
    if mapping_file is not None:
        loaded = yaml.safe_load(mapping_file.read_text()) or {}
        mapping = loaded.get("columns", loaded) if isinstance(loaded, dict) else {}
        if not isinstance(mapping, dict):
            raise MappingError(f"{mapping_file}: expected a 'columns' mapping of header -> target")
    columns = [c for h in headers if (c := parse_target(h, str(mapping.get(h, h)))) is not None]
    if not any(c.identity for c in columns):
        raise MappingError(f"no identifier column (one of {', '.join(sorted(set(IDENTITY_COLUMNS)))})")
    return columns


def typed_value(column: Column, text: str) -> str:
    """The canonical text of ``text`` as the column's type; ValueError names the problem."""
    if column.type == "number":
        number = float(text)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("expected a finite number")
        return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)
    if column.type == "boolean":
        if text.lower() in TRUE:
            return "true"
        if text.lower() in FALSE:
            return "false"
        raise ValueError("expected true/false")
    if column.type == "date":
        date = canonical_date(text)
        if date is None:
            raise ValueError("expected an ISO date (YYYY-MM-DD) or date-time")
        return date
    return text


def row_record(columns: list[Column], row: dict[str, str], message_id: str, now_ms: int) -> dict[str, Any]:
    identity: dict[str, str | None] = dict.fromkeys(
        ("install_id", "anonymous_id", "external_user_id", "email", "phone")
    )
    attributes = []
    for column in columns:
        text = (row.get(column.header) or "").strip()
        if not text:
            continue
        if column.identity:
            identity[column.target] = text
            continue
        try:
            value = typed_value(column, text)
        except ValueError as exc:
            raise ValueError(f"column {column.header!r} ({column.type}): {exc}") from None
        attributes.append({"name": column.target, "type": column.type, "value": value, "scope": "person"})
    if not any(identity.values()):
        raise ValueError("no identifier: every identifier column is empty")
    return {
        "message_id": message_id,
        "event_time": now_ms,
        "received_time": None,
        "source": "csv-import",
        "app_id": None,
        "backfill": False,
        "identity": identity,
        "context": {},
        "action": "update",
        "previous_id": None,
        "attributes": attributes,
        "device": None,
    }


def prepare(
    path: Path, topic: str, serde: Serde, mapping_file: Path | None = None
) -> tuple[list[PreparedRecord], list[BadLine]]:
    """Every row as an encoded record, or a rejection with its line number and reason."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    now_ms = int(time.time() * 1000)
    good: list[PreparedRecord] = []
    bad: list[BadLine] = []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = columns_for(list(reader.fieldnames or []), mapping_file)
        end_of_previous = reader.line_num
        for row in reader:
            line, end_of_previous = end_of_previous + 1, reader.line_num  # a quoted cell may span lines
            if None in row:  # more cells than headers
                bad.append(BadLine(line, f"{len(row) - 1 + len(row[None])} cells, header has {len(row) - 1}"))
                continue
            try:
                record = row_record(columns, row, f"import-{digest}-{line}", now_ms)
                value = serde.encode("profile_update", record, topic=topic)
            except (ValueError, SerdeError) as exc:
                bad.append(BadLine(line, str(exc)))
                continue
            good.append(PreparedRecord(line, record_key(record), value))
    return good, bad
