"""Reading the end of a partition back, as a service taking a partition over does (the enricher's
outbox read-back, the trigger's outbound read-back), against the real broker."""

import uuid

import pytest
from confluent_kafka import Producer

from services.common.kafka import client_config, ensure_topics, read_tail
from services.common.topics import OUTBOUND_TOPICS, topic_name

OUTBOUND_EMAIL, OUTBOUND_SMS, OUTBOUND_PUSH = OUTBOUND_TOPICS[:3]

pytestmark = pytest.mark.integration


def test_the_last_records_of_one_partition_of_each_topic(settings):
    ensure_topics(settings, [OUTBOUND_EMAIL, OUTBOUND_SMS, OUTBOUND_PUSH])
    email, sms, push = (topic_name(t, settings) for t in (OUTBOUND_EMAIL, OUTBOUND_SMS, OUTBOUND_PUSH))
    producer = Producer(client_config(settings))
    for n in range(10):
        producer.produce(email, value=b"e%d" % n, partition=1)
    producer.produce(email, value=b"other partition", partition=0)
    producer.produce(sms, value=b"s0", partition=1)
    assert producer.flush(30) == 0

    values = read_tail(settings, [email, sms, push], 1, 3, timeout=30)

    # the last three of email[1], the only record of sms[1]; push[1] is empty
    assert values is not None
    assert sorted(values) == [b"e7", b"e8", b"e9", b"s0"]


def test_a_transactional_partition_ends_at_its_commit_marker(settings):
    """A transaction's commit marker takes the last offset: the read must still end."""
    ensure_topics(settings, [OUTBOUND_EMAIL])
    email = topic_name(OUTBOUND_EMAIL, settings)
    producer = Producer({**client_config(settings), "transactional.id": f"tail-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for n in range(4):
        producer.produce(email, value=b"t%d" % n, partition=2)
    producer.commit_transaction(30)

    values = read_tail(settings, [email], 2, 10, timeout=30, **{"isolation.level": "read_committed"})

    assert values == [b"t0", b"t1", b"t2", b"t3"]
