"""Copies the hop puts in ``enricher.identity``, skipped by the identity stage.

The hop (``*.valid`` → ``enricher.identity``) is stateless and at-least-once: after a crash it
forwards again what it forwarded since its last commit, as byte-identical copies at later
offsets of ``enricher.identity``. The identity stage reads each record as of its own offset
(``versions.py``), so a copy resolves against the identity state written *after* the original:
a device logged out (or in) in between routes the copy to another person, whose stage-2 window
of applied ids does not hold it, and the record is emitted twice under two persons; a copied
login even merges the device's new anonymous person. Seen in the chaos run: an `app_launch` at
identity offset 768 routed to its person, its copy at 807 (after the same device's logout) to
the fresh anonymous one (docs/design.md, "Fault tests").

A record whose bytes sit in the ``window`` offsets before it, as seen by this process, is such a
copy (ingest writes each valid record once, so nothing else repeats bytes). The window is what
this process has read since it (re)started the partition: the stage replays from its committed
offset, which is at or before the originals of the hop's replay (both commit together, and the
stage never runs ahead of the hop), so they are in it. After a jump backwards (a replay after a
rebalance) the window starts over, so an original is never taken for a copy of itself.
"""

from __future__ import annotations

from services.common.recent import RecentValues

WINDOW = 20_000  # offsets of enricher.identity: far more than one commit interval's records


class HopCopies:
    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._partitions: dict[tuple[str, int], RecentValues] = {}

    def is_copy(self, topic: str, partition: int, offset: int, value: bytes | None) -> bool:
        recent = self._partitions.get((topic, partition))
        if recent is None or not recent.next_offset <= offset < recent.next_offset + self.window:
            recent = self._partitions[(topic, partition)] = RecentValues(self.window)
        return recent.is_copy(offset, value)
