"""A batch of decided inputs whose outputs are not yet acknowledged, and the tables as the next
decision of the batch must see them.

The app decides a batch's inputs one after the other, sends all their outputs, awaits the
acknowledgements once, and only then writes the states (a state that knows a message implies the
message is on its topic). Until then the tables do not hold the batch's decisions, so each
decision reads them through :class:`Overlay`: the batch's own writes first, then the table. A later
input of the same person sees the earlier one's caps, re-entry and emitted message ids.

A key written twice in a batch is written once, with its last value: the earlier value would only
be overwritten in the same changelog. Writes and due times keep the order of their last decision.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from services.trigger.stages import Outcome, Send

Origin = TypeVar("Origin")  # what a write belongs to: the app's faust event (its changelog partition)


class Overlay(Mapping[str, Any]):
    """A table with the batch's pending writes on top. Read-only: writes go through the batch."""

    def __init__(self, pending: Mapping[str, Any], table: Mapping[str, Any]) -> None:
        self._pending, self._table = pending, table

    def __getitem__(self, key: str) -> Any:
        if key in self._pending:
            return self._pending[key]
        return self._table[key]

    def get(self, key: str, default: Any = None) -> Any:
        # one look-up in the table (a RocksDB read), not Mapping.get's `in` then `[]`
        if key in self._pending:
            return self._pending[key]
        return self._table.get(key, default)

    def __iter__(self) -> Iterator[str]:
        yield from self._pending
        yield from (key for key in self._table if key not in self._pending)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class Batch(Generic[Origin]):
    def __init__(self, tables: Mapping[str, Mapping[str, Any]]) -> None:
        self._sends: list[Send] = []
        self._writes: dict[tuple[str, str], tuple[Origin, Any]] = {}  # (table, key) -> last write
        self._due: dict[str, tuple[Origin, int | None]] = {}  # person -> last due time
        self._pending: dict[str, dict[str, Any]] = {name: {} for name in tables}
        self.inputs = 0  # decisions added, for the batch-size histogram
        self.tables = {name: Overlay(self._pending[name], table) for name, table in tables.items()}

    @property
    def persons(self) -> Overlay:
        return self.tables["persons"]

    @property
    def states(self) -> Overlay:
        return self.tables["states"]

    def add(self, origin: Origin, outcome: Outcome) -> None:
        """One input's decision, made against :attr:`tables`; later decisions see its writes."""
        self.inputs += 1
        self._sends.extend(outcome.sends)
        for table, key, value in outcome.writes:
            self._writes.pop((table, key), None)  # re-inserted: in the order of the last write
            self._writes[table, key] = (origin, value)
            self._pending[table][key] = value
        for person, due in outcome.due.items():
            self._due.pop(person, None)
            self._due[person] = (origin, due)

    @property
    def sends(self) -> list[Send]:
        """Every output of the batch, in decision order."""
        return self._sends

    def writes(self) -> Iterator[tuple[Origin, str, str, Any]]:
        """(origin, table, key, value): the last write of each key, in order."""
        for (table, key), (origin, value) in self._writes.items():
            yield origin, table, key, value

    def due(self) -> Iterator[tuple[Origin, str, int | None]]:
        """(origin, person, next due time): the last of each person, in order."""
        for person, (origin, due) in self._due.items():
            yield origin, person, due

    def __bool__(self) -> bool:
        return bool(self._sends or self._writes or self._due)
