"""The values of a partition's last ``window`` offsets: is a record an exact copy of one just
before it? Used by the loader's copy filter (``services/loader/copies.py``) and the enricher's
identity stage (``services/enricher/hop_copies.py``).

Values are compared by Python's 64-bit hash (per process: each process rebuilds its window); a
collision inside one window is about 1 in 10^10 at 20 000 offsets.
"""

from __future__ import annotations

from collections.abc import Sequence


class RecentValues:
    """The values of one partition's last ``window`` offsets, a batch at a time.

    Per value hash the latest offset holding it: a record is a copy when that offset is at most
    ``window`` before its own. Lookups go through ``map`` over the batch (a Python step per record
    cost a fifth of the loader's time)."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._latest: dict[int, int] = {}  # hash -> latest offset holding it
        self.next_offset = -1  # the offset after the last one seen

    def copies(self, offsets: Sequence[int], values: Sequence[bytes | None]) -> list[bool]:
        """Per record (ascending offsets, after those seen so far), whether it is a copy;
        remembers them all."""
        if not offsets:
            return []
        hashes = list(map(hash, values))
        latest = self._latest
        if len(set(hashes)) == len(hashes):  # no value twice in the batch (the usual case)
            previous = list(map(latest.get, hashes))
            latest.update(zip(hashes, offsets, strict=True))
        else:  # a copy inside the batch: its original must be remembered first
            previous = []
            for digest, offset in zip(hashes, offsets, strict=True):
                previous.append(latest.get(digest))
                latest[digest] = offset
        self.next_offset = offsets[-1] + 1
        if len(latest) > 2 * self.window:  # memory only: older entries can never match again
            floor = self.next_offset - self.window
            self._latest = {digest: offset for digest, offset in latest.items() if offset >= floor}
        if previous.count(None) == len(previous):
            return [False] * len(previous)
        window = self.window
        return [p is not None and p >= o - window for p, o in zip(previous, offsets, strict=True)]

    def is_copy(self, offset: int, value: bytes | None) -> bool:
        """:meth:`copies` of one record."""
        return self.copies([offset], [value])[0]
