"""What the person stage already produced for a partition: the end of that partition of ``enriched``.

Why: after a crash the replay of an applied record sends its stored outputs again (``outbox.py``),
but usually they had left before the crash, and a second copy on ``enriched`` becomes a second row
or a second count downstream. ``enriched`` and ``enricher.routed`` are both keyed by person id with
the same partition count and faust's partitioner, so what partition p of the person stage produced
is at the end of partition p of ``enriched``, and nobody else writes there. Reading its last
records once, at the first replay of the partition, lets the stage re-send only what is missing.
A record not found (older than the read window, or partition counts that differ) is sent again:
the read-back can only spare copies, never lose an output.
"""

from __future__ import annotations

from services.common.kafka import read_tail
from services.common.logs import get_logger
from services.common.serde import Serde, SerdeError
from services.common.settings import Settings
from services.common.topics import ENRICHED, topic_name

log = get_logger("enricher")
Produced = set[tuple[str, str]]  # (message_id, kind) of enriched records


def produced(
    settings: Settings, serde: Serde, partition: int, records: int, timeout: float = 5.0
) -> Produced:
    """(message_id, kind) of the last ``records`` records of ``enriched`` partition ``partition``;
    empty when the end cannot be read in ``timeout`` (then everything is sent again).

    It runs on faust's event loop (see app.py), which also sends the group heartbeats: the whole
    call stays well under the session timeout (10 s), or a slow broker would get the worker
    thrown out of its group, again at each restore. Giving up only costs copies, which every
    consumer of ``enriched`` drops."""
    values = read_tail(settings, [topic_name(ENRICHED, settings)], partition, records, timeout)
    if values is None:
        log.warning("enriched read-back timed out", extra={"partition": partition})
        return set()
    found: Produced = set()
    for value in values:
        try:
            record = serde.decode(value)[1]
            found.add((record["message_id"], record["kind"]))
        except (SerdeError, KeyError):
            continue
    return found
