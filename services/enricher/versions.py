"""Versioned entries of the identity table, so a replayed record resolves exactly as it first did.

Stage 1 reads and writes several keys per record, and its routing depends on what earlier records
wrote (a device's person changes at a login). After a crash, records since the last commit are
replayed against a state that may already hold their writes and those of later records: resolved
against the latest values, a login would find itself applied and send no ``merge`` (the lost
hand-over), and a record before it would be routed to the new person. So every entry keeps the
input offset that wrote it and its recent older versions, and a record at offset ``o`` reads the
newest version written *before* ``o`` (:class:`AsOf`). Its resolution, writes and routed envelopes
are then the same on every replay; its writes replace the versions from ``o`` on (later records
replay after it and write theirs again).

Stored form: ``{"@o": offset, "@v": value, "@h": [[offset, value], ...]}`` (newest first); a plain
value (written before versions existed) counts as written at offset -1. Versions below the
committed offset are never read again except the newest of them, the *floor*: what a replay from
the committed offset reads first. At most ``MAX_VERSIONS`` are kept, and a busy key loses its
oldest versions above the floor, never the floor itself (losing it made a replayed login read its
person as absent: a ``TypeError`` and the record parked, chaos run seed 102). ``committed`` must be
an offset the broker confirmed (``faust_commits.confirmed_offset``), not one a failed commit left.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

MAX_VERSIONS = 8


def versions(stored: Any) -> list[tuple[int, Any]]:
    """(offset, value) newest first."""
    if isinstance(stored, dict) and "@o" in stored:
        return [(stored["@o"], stored["@v"]), *((o, v) for o, v in stored.get("@h", []))]
    return [(-1, stored)]


class AsOf(Mapping[str, Any]):
    """The table as it was before the record at ``offset`` was applied."""

    def __init__(self, table: Mapping[str, Any], offset: int) -> None:
        self.table, self.offset = table, offset

    def get(self, key: str, default: Any = None) -> Any:
        stored = self.table.get(key)
        if stored is None:
            return default
        return next((v for o, v in versions(stored) if o < self.offset), default)

    def __getitem__(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


def stamp(
    table: Mapping[str, Any], writes: dict[str, Any], offset: int, committed: int | None
) -> dict[str, Any]:
    """The stored form of one record's writes: each value as the version of ``offset``."""
    out = {}
    for key, value in writes.items():
        stored = table.get(key)
        older = [] if stored is None else [(o, v) for o, v in versions(stored) if o < offset]
        if committed is not None:
            below = [i for i, (o, _) in enumerate(older) if o < committed]
            older = older[: below[0] + 1] if below else older  # the newest below committed stays
        if len(older) > MAX_VERSIONS - 1:  # keep the newest ones and the oldest (the floor)
            older = [*older[: MAX_VERSIONS - 2], older[-1]]
        entry = {"@o": offset, "@v": value}
        if older:
            entry["@h"] = [list(ov) for ov in older]
        out[key] = entry
    return out
