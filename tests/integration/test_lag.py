"""Consumer-group lag, as the demo and the drain checks read it, against the real broker."""

import uuid

import pytest
from confluent_kafka import Producer, TopicPartition

from services.common.kafka import client_config, ensure_topics, make_consumer
from services.common.lag import PartitionLag, group_lag, partition_lags
from services.common.topics import EVENTS, topic_name
from tests.helpers import wait_until


def _consume_and_commit(settings, group: str, topic: str, count: int) -> None:
    consumer = make_consumer(settings, group, **{"isolation.level": "read_committed"})
    consumer.subscribe([topic])
    seen = 0
    next_offsets: dict[int, int] = {}
    while seen < count:
        for message in consumer.consume(count - seen, timeout=1.0):
            if message.error() is None:
                seen += 1
                next_offsets[message.partition()] = message.offset() + 1
    consumer.commit(
        offsets=[TopicPartition(topic, p, o) for p, o in next_offsets.items()], asynchronous=False
    )
    consumer.close()


def _produce_transactions(settings, topic: str) -> None:
    """Three transactions of five records on partition 0: a commit marker after each."""
    producer = Producer({**client_config(settings), "transactional.id": f"lag-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    for batch in range(3):
        producer.begin_transaction()
        for n in range(5):
            producer.produce(topic, value=b"t%d-%d" % (batch, n), partition=0)
        producer.commit_transaction(30)


@pytest.mark.integration
def test_lag_counts_what_a_group_has_not_committed_including_partitions_it_never_committed(settings):
    ensure_topics(settings, [EVENTS])
    topic = topic_name(EVENTS, settings)
    producer = Producer(client_config(settings))
    for n in range(10):
        producer.produce(topic, value=b"x%d" % n, partition=0)
    producer.produce(topic, value=b"other", partition=1)
    producer.flush(30)
    group = f"lag-test-{uuid.uuid4().hex}"

    _consume_and_commit(settings, group, topic, 4)  # from either partition, whichever comes first

    assert group_lag(settings, group) == 11 - 4


@pytest.mark.integration
def test_a_group_that_read_every_transaction_has_no_lag_left_by_commit_markers(settings):
    """A transactional producer leaves a commit marker after each transaction; a read_committed
    consumer that committed past its last record must count as caught up."""
    ensure_topics(settings, [EVENTS])
    topic = topic_name(EVENTS, settings)
    _produce_transactions(settings, topic)
    group = f"lag-test-{uuid.uuid4().hex}"

    _consume_and_commit(settings, group, topic, 15)

    assert wait_until(lambda: group_lag(settings, group) == 0, timeout=10, what="lag 0")


@pytest.mark.integration
def test_partition_lags_name_each_partition_behind_with_its_committed_offset(settings):
    """What the chaos drain reports when it times out: which group, topic and partition, where
    the group committed, and how many records lie after it. A partition the group committed
    past its last transaction is not behind, whatever its marker offsets."""
    ensure_topics(settings, [EVENTS])
    topic = topic_name(EVENTS, settings)
    _produce_transactions(settings, topic)
    plain = Producer(client_config(settings))
    for n in range(2):
        plain.produce(topic, value=b"p%d" % n, partition=1)
    plain.flush(30)
    group = f"lag-test-{uuid.uuid4().hex}"
    consumer = make_consumer(settings, group, **{"isolation.level": "read_committed"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    offsets: list[int] = []
    wait_until(
        lambda: (
            offsets.extend(m.offset() for m in consumer.consume(15, timeout=1.0) if not m.error())
            or len(offsets) == 15
        ),
        timeout=30,
        what="partition 0's records",
    )
    consumer.commit(offsets=[TopicPartition(topic, 0, offsets[-1] + 1)], asynchronous=False)
    consumer.close()

    lags = partition_lags(settings, group)

    assert lags == [PartitionLag(group, topic, 1, -1, 2, 2)]
    assert str(lags[0]) == f"{group} {topic}[1] committed -1 end 2: 2 records"
