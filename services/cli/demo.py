"""``tagstream demo``: feed the example records through the running stack and show what arrives.

Later services extend what it prints; today it shows the raw topics round-tripping.
"""

from __future__ import annotations

from collections.abc import Callable

from services.cli import consume as consume_mod
from services.cli import produce as produce_mod
from services.common.jsonform import JsonForm
from services.common.serde import Serde, SerdeError
from services.common.settings import REPO_ROOT, Settings
from services.common.topics import RAW_TOPICS, topic_name

EXAMPLES = REPO_ROOT / "tests" / "data" / "records"


def run_demo(settings: Settings, say: Callable[[str], object]) -> None:
    serde = Serde(registry_url=settings.schema_registry_url)
    form = JsonForm()
    for spec in RAW_TOPICS:
        name = topic_name(spec, settings)
        records, _bad = produce_mod.prepare(
            EXAMPLES / f"{spec.record_type}.jsonl", spec.record_type, name, serde, form
        )
        produce_mod.produce_all(settings, name, records)
        say(f"produced {len(records)} example {spec.record_type} records to {name}")
    for spec in RAW_TOPICS:
        name = topic_name(spec, settings)
        items = list(
            consume_mod.consume(settings, name, serde, from_beginning=True, max_records=None, timeout_s=1.0)
        )
        decoded = [item for item in items if not isinstance(item, SerdeError)]
        latest = _summary(decoded[-1]) if decoded else "-"
        say(f"{name}: {len(decoded)} records on the topic (latest: {latest})")


def _summary(item: tuple[str, dict]) -> str:
    kind, record = item
    label = record.get("name") or record.get("status") or record.get("action") or record.get("kind") or ""
    return f"{kind} {record['message_id']} {label}".strip()
