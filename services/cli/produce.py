"""``tagstream produce``: JSON lines -> validated Avro records -> Kafka.

The whole file is checked before anything is produced: a bad line stops the command with its
line number and the offending field, and nothing from that file reaches Kafka (unless
``--skip-invalid``, which produces the valid lines and lists the rest).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.jsonform import JsonForm, JsonFormError
from services.common.kafka import produce_acknowledged, record_key
from services.common.serde import Serde, SerdeError
from services.common.settings import Settings


@dataclass(frozen=True)
class BadLine:
    line: int
    error: str


@dataclass(frozen=True)
class PreparedRecord:
    line: int
    key: bytes | None
    value: bytes


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            if text.strip():
                yield number, text


def prepare(
    path: Path, record_type: str, topic: str, serde: Serde, form: JsonForm
) -> tuple[list[PreparedRecord], list[BadLine]]:
    good: list[PreparedRecord] = []
    bad: list[BadLine] = []
    for number, text in iter_lines(path):
        try:
            obj = json.loads(text)
            record = form.from_json(record_type, obj)
            value = serde.encode(record_type, record, topic=topic)
        except json.JSONDecodeError as exc:
            bad.append(BadLine(number, f"not JSON: {exc.msg} at column {exc.colno}"))
            continue
        except (JsonFormError, SerdeError) as exc:
            bad.append(BadLine(number, str(exc)))
            continue
        good.append(PreparedRecord(number, record_key(record), value))
    return good, bad


def produce_all(
    settings: Settings,
    topic: str,
    records: list[PreparedRecord],
    on_delivered: Callable[[int], Any] = lambda n: None,
) -> None:
    """Produce and wait for every acknowledgement; raise if any record was not acknowledged."""
    produce_acknowledged(
        settings, ((topic, r.key, r.value) for r in records), on_delivered=on_delivered, timeout=60
    )
