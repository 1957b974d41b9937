"""The shape of a record's path through a service: small steps that return the (new) record or
a :class:`Rejection`; one place turns rejections into dead letters.

Steps never raise for bad data. A service's main module lists its steps top to bottom.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

MAX_ORIGINAL_BYTES = 1 << 20


@dataclass(frozen=True)
class Rejection:
    reason: str  # reason code: undecodable, schema_violation, missing_identity, ...
    message: str  # for a human; names the field, never echoes personal data
    step: str = ""


@dataclass(frozen=True)
class SourcePosition:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def dead_letter(
    service: str, step: str, rejection: Rejection, source: SourcePosition, message_id: str | None = None
) -> dict[str, Any]:
    """A ``dead_letter`` record (schemas/dead_letter.avsc) describing why ``source`` was refused."""
    original = source.value or b""
    truncated = len(original) > MAX_ORIGINAL_BYTES
    if message_id is None:
        # Undecodable: no message_id of its own; derive a stable one from its position.
        digest = hashlib.sha1(f"{source.topic}/{source.partition}/{source.offset}".encode()).hexdigest()[:16]
        message_id = f"dlq-{digest}"
    return {
        "message_id": message_id,
        "time": int(time.time() * 1000),
        "service": service,
        "step": rejection.step or step,
        "reason": rejection.reason,
        "message": rejection.message,
        "source_topic": source.topic,
        "source_partition": source.partition,
        "source_offset": source.offset,
        "original": original[:MAX_ORIGINAL_BYTES],
        "original_key": source.key,
        "truncated": truncated,
    }
