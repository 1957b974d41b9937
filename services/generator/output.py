"""Where generated records go: JSON-lines files (what `tagstream produce` reads) or Kafka.

Both also write/return a manifest: counts per topic, expected dead letters by reason, duplicates.
Tests and `make chaos` use it to know what the pipeline should end up with.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from services.common.jsonform import JsonForm, dumps
from services.common.kafka import produce_acknowledged, record_key
from services.common.serde import Serde
from services.common.settings import Settings
from services.common.topics import RAW_TOPIC_BY_NAME, topic_name
from services.generator.population import Generated


def manifest(items: Sequence[Generated]) -> dict[str, Any]:
    valid = [i for i in items if i.expected_reason is None and i.duplicate_of is None]
    return {
        "records": len(items),
        "valid_unique": len(valid),
        "duplicates": sum(1 for i in items if i.duplicate_of),
        "per_topic": dict(Counter(i.topic for i in items)),
        "valid_unique_per_topic": dict(Counter(i.topic for i in valid)),
        "expected_dead_letters": dict(Counter(i.expected_reason for i in items if i.expected_reason)),
    }


def write_files(items: Sequence[Generated], out_dir: Path) -> dict[str, Any]:
    """One ``<topic>.jsonl`` per raw topic; undecodable samples go to ``undecodable.bin`` (one per line)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    form = JsonForm()
    with contextlib.ExitStack() as stack:
        handles = {
            name: stack.enter_context(open(out_dir / f"{name}.jsonl", "w", encoding="utf-8"))
            for name in RAW_TOPIC_BY_NAME
        }
        raw_out = stack.enter_context(open(out_dir / "undecodable.bin", "wb"))
        for item in items:
            if item.record is None:
                raw_out.write((item.raw or b"") + b"\n")
            else:
                handles[item.topic].write(dumps(form.to_json(item.record_type, item.record)) + "\n")
    summary = manifest(items)
    (out_dir / "manifest.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def encoded(settings: Settings, items: Sequence[Generated]) -> Iterator[tuple[str, bytes | None, bytes]]:
    """``(topic, key, value)`` of every item, in stream order, as ingest's raw topics expect them."""
    serde = Serde(registry_url=settings.schema_registry_url)
    for item in items:
        name = topic_name(RAW_TOPIC_BY_NAME[item.topic], settings)
        if item.record is None:
            yield name, None, item.raw or b""
        else:
            # check=False: the generator builds schema-valid records; skip the slow validation.
            value = serde.encode(item.record_type, item.record, topic=name, check=False)
            yield name, record_key(item.record), value


def produce_items(
    settings: Settings, items: Sequence[Generated], on_delivered: Callable[[int], Any] = lambda n: None
) -> dict[str, Any]:
    """Produce every item to its raw topic in stream order; wait for all acknowledgements."""
    produce_acknowledged(settings, encoded(settings, items), on_delivered=on_delivered)
    return manifest(items)
