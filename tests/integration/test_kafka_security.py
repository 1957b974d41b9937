"""Kafka credentials reach every client: a broker of the test's own with a SASL_PLAINTEXT (PLAIN)
listener accepts the CLI's and faust's clients configured through ``TAGSTREAM_KAFKA_*``, and
refuses clients without credentials or with a wrong password."""

import asyncio
import json
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from services.common.broker import LocalBroker, SaslListener
from services.common.kafka import client_config, ensure_topics, make_admin
from services.common.security import faust_broker_kwargs
from services.common.settings import Settings
from services.common.topics import TAGS, topic_name
from tests.conftest import free_port, local_broker_settings, settings_env
from tests.helpers import DATA, tagstream, wait_until

USER, PASSWORD = "tagstream", "s3cret-pw"


@pytest.fixture(scope="module")
def sasl_port(tmp_path_factory):
    broker_settings = local_broker_settings(tmp_path_factory.mktemp("sasl-kafka"))
    listener = SaslListener(free_port(), {USER: PASSWORD})
    broker = LocalBroker(broker_settings, sasl=listener)
    broker.start()
    try:
        yield listener.port
    finally:
        broker.stop()


def sasl_settings(port: int, tmp_path, **overrides) -> Settings:
    fields = {
        "kafka_bootstrap": f"127.0.0.1:{port}",
        "topic_prefix": f"t{uuid.uuid4().hex[:10]}-",
        "data_dir": tmp_path / "data",
        "kafka_security_protocol": "SASL_PLAINTEXT",
        "kafka_sasl_mechanism": "PLAIN",
        "kafka_sasl_username": USER,
        "kafka_sasl_password": PASSWORD,
        **overrides,
    }
    return Settings(**fields)


def sasl_env(s: Settings) -> dict[str, str]:
    env = settings_env(s)
    env.update(
        TAGSTREAM_KAFKA_SECURITY_PROTOCOL=s.kafka_security_protocol,
        TAGSTREAM_KAFKA_SASL_MECHANISM=s.kafka_sasl_mechanism,
        TAGSTREAM_KAFKA_SASL_USERNAME=s.kafka_sasl_username,
        TAGSTREAM_KAFKA_SASL_PASSWORD=s.kafka_sasl_password.get_secret_value(),
    )
    return env


def refusal(s: Settings) -> str:
    """The first error a client with these settings reports (it never gets metadata)."""
    errors: list[KafkaError] = []
    producer = Producer({**client_config(s), "error_cb": errors.append, "log_level": 0})
    with pytest.raises(KafkaException):
        make_admin(s).list_topics(timeout=5)
    wait_until(lambda: producer.poll(0.2) is not None and errors, 20, what="a client error")
    return errors[0].str()


@pytest.mark.integration
class TestSasl:
    def test_cli_produces_and_consumes_with_credentials(self, sasl_port, tmp_path):
        """`tagstream topics ensure`, `produce` and `consume` work against the SASL listener when
        the TAGSTREAM_KAFKA_SASL_* variables are set."""
        s = sasl_settings(sasl_port, tmp_path)
        env = sasl_env(s)
        assert tagstream("topics", "ensure", env=env).returncode == 0
        records = DATA / "records" / "tag_hit.jsonl"
        produced = tagstream("produce", "--topic", "tags", str(records), env=env)
        assert produced.returncode == 0, produced.stderr
        consumed = tagstream(
            "consume", "--topic", "tags", "--from-beginning", "--max", "2", "--timeout", "20", env=env
        )
        assert sorted(consumed.stdout.splitlines()) == sorted(records.read_text().splitlines())

    def test_wrong_password_is_refused(self, sasl_port, tmp_path):
        """A client with a wrong password gets an authentication error, never the cluster."""
        s = sasl_settings(sasl_port, tmp_path, kafka_sasl_password="wrong")
        assert "authentication" in refusal(s).lower()

    def test_no_credentials_is_refused(self, sasl_port, tmp_path):
        """A PLAINTEXT client on the SASL listener gets no metadata."""
        s = sasl_settings(
            sasl_port,
            tmp_path,
            kafka_security_protocol="PLAINTEXT",
            kafka_sasl_mechanism=None,
            kafka_sasl_username=None,
            kafka_sasl_password=None,
        )
        assert refusal(s)

    def test_faust_credentials_produce_and_consume(self, sasl_port, tmp_path):
        """The credentials faust apps get (faust_broker_kwargs) authenticate aiokafka clients, the
        driver under faust, for a produce and a consume."""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        s = sasl_settings(sasl_port, tmp_path)
        ensure_topics(s, [TAGS])
        topic = topic_name(TAGS, s)
        auth = credentials_to_aiokafka_auth(faust_broker_kwargs(s)["broker_credentials"])
        assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["sasl_mechanism"] == "PLAIN"

        async def roundtrip() -> bytes:
            producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, **auth)
            await producer.start()
            try:
                await producer.send_and_wait(topic, json.dumps({"n": 1}).encode(), partition=0)
            finally:
                await producer.stop()
            consumer = AIOKafkaConsumer(
                topic, bootstrap_servers=s.bootstrap_servers, auto_offset_reset="earliest", **auth
            )
            await consumer.start()
            try:
                message = await asyncio.wait_for(consumer.getone(), 30)
                return message.value
            finally:
                await consumer.stop()

        assert json.loads(asyncio.run(roundtrip())) == {"n": 1}
