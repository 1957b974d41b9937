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

A record whose bytes sit in the ``window`` offsets before it is such a copy (ingest writes each
valid record once, so nothing else repeats bytes). The window is what this process has read of
the partition since it (re)started there, plus what it read back from *before* that start
(:meth:`HopCopies.seed`, called by the agent on the first record after every start or jump): the
stage resumes at its committed offset, but a copy's original may lie before it. After a restart
the stage replays its originals fast and commits past them while the hop is still forwarding its
copies of them; a second crash then resumes the stage past the originals, in front of the copies
(chaos run, seed 101: the original at offset 288, the stage restarted at 353, the copy at 358).
Both the hop and the stage commit every few seconds, so a copy's original lies a few seconds of
traffic before the stage's committed offset: ``window`` records (default 20 000) cover that up to
thousands of records per second; the size is ``TAGSTREAM_ENRICHER_COPY_WINDOW``.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.common.recent import RecentValues

WINDOW = 20_000  # offsets of enricher.identity: far more than one commit interval's records


class HopCopies:
    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._partitions: dict[tuple[str, int], RecentValues] = {}

    def needs_seed(self, topic: str, partition: int, offset: int) -> bool:
        """Whether ``offset`` starts a new run of the partition here (the first record since the
        process started or the partition was assigned, or a jump): its window must be read back."""
        recent = self._partitions.get((topic, partition))
        return recent is None or not recent.next_offset <= offset < recent.next_offset + self.window

    def seed(self, topic: str, partition: int, earlier: Sequence[tuple[int, bytes | None]]) -> None:
        """Start the partition's window over with the records just before where it resumes."""
        recent = self._partitions[(topic, partition)] = RecentValues(self.window)
        if earlier:
            recent.copies([o for o, _ in earlier], [v for _, v in earlier])

    def is_copy(self, topic: str, partition: int, offset: int, value: bytes | None) -> bool:
        if self.needs_seed(topic, partition, offset):  # not read back (tests, or the read failed)
            self.seed(topic, partition, [])
        return self._partitions[(topic, partition)].is_copy(offset, value)
