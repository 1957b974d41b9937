"""Consumer-group lag: how many records each service's group has not yet committed past.

The demo (and anyone draining the pipeline) asks "has every service caught up?" by the offsets
the services committed, not by waiting: lag 0 in every group means every record produced so
far was processed and its outputs acknowledged (the services commit last).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from services.common.kafka import client_config, make_reader, watermarks
from services.common.settings import Settings
from services.common.topics import SEGMENTER_TICKS, TRIGGER_TICKS, topic_name

# Short-lived tool consumers (tagstream consume, dlq inspect, demo reads) are not services.
TOOL_GROUP_PREFIX = "tagstream-reader-"
# Gaps up to this many offsets are read to count real records (see _readable).
VERIFY_GAP = 1000


def _admin(settings: Settings) -> AdminClient:
    # log_level 4: librdkafka's info line about purged background events when a short-lived
    # admin client is destroyed is noise in the demo's output.
    return AdminClient({**client_config(settings), "log_level": 4})


def service_groups(settings: Settings) -> list[str]:
    admin = _admin(settings)
    listed = admin.list_consumer_groups(request_timeout=10).result()
    return sorted(g.group_id for g in listed.valid if not g.group_id.startswith(TOOL_GROUP_PREFIX))


def committed_offsets(settings: Settings, group: str) -> dict[str, dict[int, int]]:
    """topic -> partition -> the offset ``group`` committed (the next one it would read)."""
    admin = _admin(settings)
    request = [ConsumerGroupTopicPartitions(group)]
    result = admin.list_consumer_group_offsets(request)[group].result()
    offsets: dict[str, dict[int, int]] = defaultdict(dict)
    for tp in result.topic_partitions:
        offsets[tp.topic][tp.partition] = tp.offset
    return offsets


def _reader(settings: Settings) -> Consumer:
    return make_reader(settings, **{"isolation.level": "read_committed", "enable.partition.eof": True})


def _readable(reader: Consumer, gaps: dict[tuple[str, int], tuple[int, int]]) -> dict[tuple[str, int], int]:
    """Records a read_committed consumer gets in each ``(topic, partition): (start, high)`` gap.
    Offsets are not records: each transaction ends in a commit marker that no consumer receives,
    so a group that read everything may have committed one offset short of the high watermark.
    All gaps are read at once, until each partition reports its end."""
    counts = dict.fromkeys(gaps, 0)
    open_ = set(gaps)
    reader.assign([TopicPartition(t, p, start) for (t, p), (start, _) in gaps.items()])
    try:
        while open_:
            message = reader.poll(5.0)
            if message is None:  # the broker did not answer: count the rest as offsets
                for key in open_:
                    counts[key] = gaps[key][1] - gaps[key][0]
                break
            key = (message.topic(), message.partition())
            if key not in open_:
                continue
            if message.error() is not None or message.offset() >= gaps[key][1]:  # end of partition
                open_.discard(key)
            elif message.value():  # empty records are a timer's ticks (segmenter.merges has them)
                counts[key] += 1
        return counts
    finally:
        reader.unassign()


@dataclass(frozen=True)
class PartitionLag:
    """One partition a group is behind on: where it committed, where the partition ends (for a
    read_committed reader) and how many records lie between."""

    group: str
    topic: str
    partition: int
    committed: int  # -1: the group never committed on this partition
    end: int
    records: int

    def __str__(self) -> str:
        where = f"{self.group} {self.topic}[{self.partition}]"
        return f"{where} committed {self.committed} end {self.end}: {self.records} records"


def partition_lags(
    settings: Settings, group: str, reader: Consumer | None = None, ignore: frozenset[str] = frozenset()
) -> list[PartitionLag]:
    """Every partition where ``group`` has records not yet committed, on every topic it has
    committed on. A partition of such a topic with no commit yet counts from its low watermark,
    so nothing unread hides. Small gaps are read to tell records from transaction markers; a
    large one is counted as is."""
    own_reader = reader is None
    reader = reader or _reader(settings)
    try:
        gaps: dict[tuple[str, int], tuple[int, int, int]] = {}  # -> (committed, start, end)
        for topic, committed in committed_offsets(settings, group).items():
            if topic in ignore:
                continue
            partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
            for partition in partitions:
                low, high = watermarks(reader, TopicPartition(topic, partition))
                position = committed.get(partition, -1)
                start = position if position >= 0 else low
                if high > start:
                    gaps[(topic, partition)] = (position, start, high)
        to_read = {tp: (start, end) for tp, (_, start, end) in gaps.items() if end - start <= VERIFY_GAP}
        counts = _readable(reader, to_read) if to_read else {}
        lags = [
            PartitionLag(group, topic, partition, position, end, counts.get((topic, partition), end - start))
            for (topic, partition), (position, start, end) in sorted(gaps.items())
        ]
        return [lag for lag in lags if lag.records]
    finally:
        if own_reader:
            reader.close()


def group_lag(
    settings: Settings, group: str, reader: Consumer | None = None, ignore: frozenset[str] = frozenset()
) -> int:
    """Records not yet committed by ``group`` (:func:`partition_lags`, summed)."""
    return sum(lag.records for lag in partition_lags(settings, group, reader, ignore))


def pipeline_partition_lags(settings: Settings) -> dict[str, list[PartitionLag]]:
    """The partitions each service consumer group is behind on. The tick topics are left out:
    they are the services' own clocks, a new tick every few seconds, not input that anyone waits
    for."""
    ticks = frozenset(topic_name(spec, settings) for spec in (SEGMENTER_TICKS, TRIGGER_TICKS))
    reader = _reader(settings)
    try:
        return {group: partition_lags(settings, group, reader, ticks) for group in service_groups(settings)}
    finally:
        reader.close()


def pipeline_lag(settings: Settings) -> dict[str, int]:
    """Lag per service consumer group (:func:`pipeline_partition_lags`, summed per group)."""
    return {group: sum(p.records for p in lags) for group, lags in pipeline_partition_lags(settings).items()}
