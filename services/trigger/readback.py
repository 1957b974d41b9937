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

import time

from confluent_kafka import TopicPartition

from services.common.kafka import make_reader, watermarks
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
    reader = make_reader(settings, **{"isolation.level": "read_committed", "enable.partition.eof": True})
    try:
        assignment, ends = [], {}
        for spec in OUTBOUND_TOPICS:
            name = topic_name(spec, settings)
            low, high = watermarks(reader, TopicPartition(name, partition))
            if high > low:
                assignment.append(TopicPartition(name, partition, max(low, high - per_partition)))
                ends[name] = high
        found: set[str] = set()
        if not assignment:
            return found
        reader.assign(assignment)
        deadline, pending = time.monotonic() + timeout, set(ends)
        while pending and time.monotonic() < deadline:
            for message in reader.consume(500, timeout=0.5):
                if message.error():
                    if message.error().code() == -191:  # _PARTITION_EOF: this topic is read to its end
                        pending.discard(message.topic())
                    continue
                try:
                    found.add(serde.decode(message.value())[1]["message_id"])
                except (SerdeError, KeyError):
                    continue
                if message.offset() + 1 >= ends[message.topic()]:
                    pending.discard(message.topic())
        if pending:
            log.warning(
                "outbound read-back timed out", extra={"partition": partition, "topics": sorted(pending)}
            )
            return None
        return found
    finally:
        reader.close()
