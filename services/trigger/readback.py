"""Message ids at the end of one partition of every outbound topic, read when a partition is taken over.

Why: the trigger acknowledges a message's produce before it writes the person's state, so a
crash between the two leaves the message on its topic and a state that does not know it; the
new owner replays the input and decides the same message again. Outbound topics are keyed by
person id like the inputs, so the previous owner's last messages for partition p are at the end
of partition p of each ``outbound.*`` topic, and nobody else writes there. Reading the last
``per_partition`` records back before processing the partition lets the replay recognise them
(docs/campaigns.md, "Exactly once").
"""

from __future__ import annotations

from services.common.kafka import read_tail
from services.common.logs import get_logger
from services.common.serde import Serde, SerdeError
from services.common.settings import Settings
from services.common.topics import OUTBOUND_TOPICS, topic_name

log = get_logger("trigger")


def recent_message_ids(
    settings: Settings, serde: Serde, partition: int, per_partition: int, timeout: float = 30.0
) -> set[str] | None:
    """The message ids of the last ``per_partition`` records of ``outbound.*`` partition ``partition``.

    None if the end could not be read in ``timeout`` (the caller must not assume anything then).
    """
    topics = [topic_name(spec, settings) for spec in OUTBOUND_TOPICS]
    committed = {"isolation.level": "read_committed"}
    values = read_tail(settings, topics, partition, per_partition, timeout, **committed)
    if values is None:
        log.warning("outbound read-back timed out", extra={"partition": partition})
        return None
    found: set[str] = set()
    for value in values:
        try:
            found.add(serde.decode(value)[1]["message_id"])
        except (SerdeError, KeyError):
            continue
    return found
