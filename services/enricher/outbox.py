"""The person stage's outbox: what each recently applied record produced, kept in the person's state.

A crash can leave a record's state write in the changelog while its outputs never reached Kafka.
The replay of that record (same input offset) then finds its message id already applied; instead
of skipping it, the stage sends the outputs stored here again. A copy of the same message id
that arrives at another offset (an ingest or hop duplicate) is still skipped: only a replay of
the very position that was applied re-emits (docs/design.md, "Recovery and guarantees").

Entries are JSON (faust tables store JSON): ``dedup key -> {"o": input offset, "out": [[output,
has_original, value], ...]}``. The input record's bytes (``original``) are not stored, the replay
carries them; the profile is not stored either, the replay sends the current one (``profiles`` is
latest-wins). Entries whose offset is below the partition's committed offset can never be
replayed and are dropped; at most ``MAX_ENTRIES`` are kept per person whatever the commits.
"""

from __future__ import annotations

from typing import Any

Output = tuple[str, dict[str, Any]]
MAX_ENTRIES = 64  # per person; more records of one person between two commits lose the oldest


def entry(offset: int, outputs: list[Output]) -> dict[str, Any]:
    """What to keep of one applied record's outputs (everything but the profile)."""
    kept = []
    for output, value in outputs:
        if output == "profile":
            continue
        has_original = value.get("original") is not None
        kept.append([output, has_original, {**value, "original": None} if has_original else value])
    return {"o": offset, "out": kept}


def replay(stored: dict[str, Any], original: bytes | None) -> list[Output]:
    """The outputs of an applied record, with its input bytes put back where they were."""
    return [
        (output, {**value, "original": original} if has_original else value)
        for output, has_original, value in stored["out"]
    ]


def keep(outbox: dict[str, Any], committed: int | None, key: str, new: dict[str, Any]) -> dict[str, Any]:
    """The outbox after adding ``new``: entries a replay may still reach, newest last."""
    live = {k: e for k, e in outbox.items() if committed is None or e["o"] >= committed}
    live.pop(key, None)
    live[key] = new
    return dict(list(live.items())[-MAX_ENTRIES:])
