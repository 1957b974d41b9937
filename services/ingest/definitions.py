"""Declared custom events: names, property names and types, loaded from YAML and reloaded.

```yaml
strict_sources: [backend]          # undeclared events from these sources are refused
events:
  - name: Order Completed
    properties: {order_id: string, revenue: number, items: array, gift: boolean, delivered_on: date}
```
A declared event's properties must match (``type_mismatch``, ``unknown_property``); an undeclared
event passes unless its source is strict (``undeclared_event``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from services.common.logs import get_logger
from services.common.steps import Rejection
from services.ingest import reasons

PropertyType = Literal["string", "number", "boolean", "date", "object", "array"]
log = get_logger(__name__)


class EventDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    properties: dict[str, PropertyType] = {}


class DefinitionsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    strict_sources: list[str] = []
    events: list[EventDefinition] = []


@dataclass(frozen=True)
class Definitions:
    events: dict[str, EventDefinition] = field(default_factory=dict)
    strict_sources: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> Definitions:
        """Raise ValueError naming the offending field."""
        try:
            parsed = DefinitionsFile.model_validate(yaml.safe_load(text) or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
        return cls({e.name: e for e in parsed.events}, frozenset(parsed.strict_sources))


def _matches(kind: str, value: Any) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if isinstance(value, str):  # date
        try:
            date.fromisoformat(value[:10])
            return True
        except ValueError:
            return False
    return False


def check_declared(
    definitions: Definitions, name: str, source: str, properties: dict[str, Any]
) -> Rejection | None:
    definition = definitions.events.get(name)
    if definition is None:
        if source in definitions.strict_sources:
            return Rejection(
                reasons.UNDECLARED_EVENT, f"event {name!r} is not declared (source {source!r} is strict)"
            )
        return None
    for prop, value in properties.items():
        kind = definition.properties.get(prop)
        if kind is None:
            return Rejection(
                reasons.UNKNOWN_PROPERTY, f"properties.{prop} is not declared for event {name!r}"
            )
        if value is not None and not _matches(kind, value):
            return Rejection(reasons.TYPE_MISMATCH, f"properties.{prop} of event {name!r} must be a {kind}")
    return None


class DefinitionsFileWatcher:
    """Reloads the definitions file when it changes; keeps the last good version on errors."""

    def __init__(self, path: Path, interval_s: float) -> None:
        self.path = path
        self.interval_s = interval_s
        self.current = Definitions()
        self._mtime: float | None = None
        self._checked = 0.0
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> Definitions:
        now = time.monotonic()
        if not force and now - self._checked < self.interval_s:
            return self.current
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self.current, self._mtime = Definitions(), None
            return self.current
        if mtime != self._mtime:
            try:
                self.current = Definitions.parse(self.path.read_text())
                log.info("event definitions loaded", extra={"events": len(self.current.events)})
            except (ValueError, yaml.YAMLError) as exc:
                log.error("event definitions refused; keeping the previous ones", extra={"error": str(exc)})
            self._mtime = mtime
        return self.current
