"""Kafka security settings -> client configuration, for both client libraries we use.

``client_config`` maps the ``TAGSTREAM_KAFKA_*`` security fields to librdkafka keys (every
confluent-kafka Producer, Consumer and AdminClient, via ``services/common/kafka.py``);
``faust_broker_kwargs`` maps the same fields to faust's ``broker_credentials`` (aiokafka underneath).
One mapping per library, so a cluster that needs SCRAM over TLS is configured once for all services.

A misconfiguration (SASL without a mechanism or credentials, a key without its certificate) raises
``ValueError`` when the first client is built, at startup, never later.
"""

from __future__ import annotations

import ssl
from typing import Any

from services.common.settings import Settings


def _check(settings: Settings) -> None:
    sasl = settings.kafka_security_protocol.startswith("SASL_")
    if sasl and not (settings.kafka_sasl_mechanism and settings.kafka_sasl_username):
        raise ValueError(
            f"TAGSTREAM_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs "
            "TAGSTREAM_KAFKA_SASL_MECHANISM, _USERNAME and _PASSWORD"
        )
    if sasl and settings.kafka_sasl_password is None:
        raise ValueError("TAGSTREAM_KAFKA_SASL_PASSWORD is unset")
    if bool(settings.kafka_ssl_certificate_location) != bool(settings.kafka_ssl_key_location):
        raise ValueError("TAGSTREAM_KAFKA_SSL_CERTIFICATE_LOCATION and _KEY_LOCATION go together")


def uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def client_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings for the configured security; empty for PLAINTEXT (the local broker)."""
    _check(settings)
    if settings.kafka_security_protocol == "PLAINTEXT":
        return {}
    config: dict[str, Any] = {"security.protocol": settings.kafka_security_protocol.lower()}
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # _check
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if uses_tls(settings):
        optional = {
            "ssl.ca.location": settings.kafka_ssl_ca_location,
            "ssl.certificate.location": settings.kafka_ssl_certificate_location,
            "ssl.key.location": settings.kafka_ssl_key_location,
        }
        config.update({key: str(path) for key, path in optional.items() if path is not None})
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """A client TLS context: the configured CA (else the system's) and the client certificate."""
    ca = settings.kafka_ssl_ca_location
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
    if settings.kafka_ssl_certificate_location and settings.kafka_ssl_key_location:
        context.load_cert_chain(
            str(settings.kafka_ssl_certificate_location), str(settings.kafka_ssl_key_location)
        )
    return context


def faust_broker_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``faust.App``: ``broker_credentials`` for the configured security."""
    import faust  # only the faust services pay for the import

    _check(settings)
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    if protocol == "SSL":
        return {"broker_credentials": faust.SSLCredentials(ssl_context(settings))}
    assert settings.kafka_sasl_password is not None  # _check
    credentials = faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=ssl_context(settings) if protocol == "SASL_SSL" else None,
    )
    return {"broker_credentials": credentials}
