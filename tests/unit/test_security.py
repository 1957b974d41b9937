"""Kafka security settings reach every client: librdkafka keys for confluent-kafka clients and
faust broker credentials, from one set of ``TAGSTREAM_KAFKA_*`` variables."""

import ast
import ssl
from pathlib import Path

import faust
import pytest

from services.common import kafka, security
from services.common.settings import Settings

TLS = Path(__file__).resolve().parents[1] / "data" / "tls"
ROOT = Path(__file__).resolve().parents[2]


def settings(**fields) -> Settings:
    return Settings(kafka_bootstrap="kafka:9093", **fields)


SCRAM_SSL = {
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "tagstream",
    "kafka_sasl_password": "s3cret",
    "kafka_ssl_ca_location": TLS / "ca.crt",
}


class TestClientConfig:
    def test_plaintext_adds_nothing(self):
        """With no security configured, clients get exactly the bootstrap servers (local broker)."""
        assert security.client_config(settings()) == {}
        assert kafka.client_config(settings()) == {"bootstrap.servers": "kafka:9093"}

    def test_scram_over_tls(self):
        """SASL_SSL with SCRAM maps to librdkafka's protocol, mechanism, credentials and CA keys."""
        assert security.client_config(settings(**SCRAM_SSL)) == {
            "security.protocol": "sasl_ssl",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "tagstream",
            "sasl.password": "s3cret",
            "ssl.ca.location": str(TLS / "ca.crt"),
        }

    def test_plain_without_tls_ignores_tls_files(self):
        """SASL_PLAINTEXT sends credentials but no TLS keys, even if files are configured."""
        config = security.client_config(
            settings(
                kafka_security_protocol="SASL_PLAINTEXT",
                kafka_sasl_mechanism="PLAIN",
                kafka_sasl_username="u",
                kafka_sasl_password="p",
                kafka_ssl_ca_location=TLS / "ca.crt",
            )
        )
        assert config == {
            "security.protocol": "sasl_plaintext",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "u",
            "sasl.password": "p",
        }

    def test_mutual_tls(self):
        """SSL with a client certificate and key (Strimzi TLS users) maps to the three file keys."""
        config = security.client_config(
            settings(
                kafka_security_protocol="SSL",
                kafka_ssl_ca_location=TLS / "ca.crt",
                kafka_ssl_certificate_location=TLS / "client.crt",
                kafka_ssl_key_location=TLS / "client.key",
            )
        )
        assert config == {
            "security.protocol": "ssl",
            "ssl.ca.location": str(TLS / "ca.crt"),
            "ssl.certificate.location": str(TLS / "client.crt"),
            "ssl.key.location": str(TLS / "client.key"),
        }

    def test_every_client_factory_gets_it(self):
        """Producers, consumers and admin clients are all built from the same config with security."""
        config = kafka.client_config(
            settings(**SCRAM_SSL, kafka_security={"ssl.endpoint.identification.algorithm": "none"})
        )
        assert config["sasl.username"] == "tagstream" and config["security.protocol"] == "sasl_ssl"
        assert config["ssl.endpoint.identification.algorithm"] == "none"  # extra settings apply last

    def test_env_variables(self, monkeypatch):
        """The k8s manifests' variables (password from a Secret) produce the same settings."""
        for name, value in {
            "TAGSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "TAGSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "TAGSTREAM_KAFKA_SASL_USERNAME": "tagstream",
            "TAGSTREAM_KAFKA_SASL_PASSWORD": "from-secret",
        }.items():
            monkeypatch.setenv(name, value)
        s = Settings()
        assert "from-secret" not in repr(s)  # the password never reaches a log line
        assert security.client_config(s)["sasl.password"] == "from-secret"

    @pytest.mark.parametrize(
        "fields",
        [
            {"kafka_security_protocol": "SASL_SSL"},
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_username": "u",
            },
            {"kafka_security_protocol": "SSL", "kafka_ssl_key_location": TLS / "client.key"},
        ],
        ids=["sasl-without-credentials", "sasl-without-password", "key-without-certificate"],
    )
    def test_incomplete_settings_fail_at_startup(self, fields):
        """A half-configured security setup is refused when clients are built, naming the variable."""
        with pytest.raises(ValueError, match="TAGSTREAM_KAFKA_"):
            security.client_config(settings(**fields))
        with pytest.raises(ValueError, match="TAGSTREAM_KAFKA_"):
            security.faust_broker_kwargs(settings(**fields))

    def test_unknown_mechanism_is_refused(self):
        """Only PLAIN and SCRAM are supported; anything else is a settings error."""
        with pytest.raises(ValueError):
            settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="GSSAPI")


class TestFaust:
    def test_plaintext_has_no_credentials(self):
        """The local broker needs no faust credentials."""
        assert security.faust_broker_kwargs(settings()) == {}

    def test_scram_over_tls(self):
        """SASL_SSL becomes faust SASL credentials with the mechanism and a TLS context."""
        creds = security.faust_broker_kwargs(settings(**SCRAM_SSL))["broker_credentials"]
        assert isinstance(creds, faust.SASLCredentials)
        assert (creds.username, creds.password, creds.mechanism.value) == (
            "tagstream",
            "s3cret",
            "SCRAM-SHA-512",
        )
        assert creds.protocol.value == "SASL_SSL" and isinstance(creds.ssl_context, ssl.SSLContext)
        assert creds.ssl_context.verify_mode == ssl.CERT_REQUIRED

    def test_plain_without_tls(self):
        """SASL_PLAINTEXT becomes SASL credentials without a TLS context."""
        creds = security.faust_broker_kwargs(
            settings(
                kafka_security_protocol="SASL_PLAINTEXT",
                kafka_sasl_mechanism="PLAIN",
                kafka_sasl_username="u",
                kafka_sasl_password="p",
            )
        )["broker_credentials"]
        assert creds.protocol.value == "SASL_PLAINTEXT" and creds.ssl_context is None
        assert creds.mechanism.value == "PLAIN"

    def test_mutual_tls(self):
        """SSL with a client certificate becomes faust SSL credentials carrying that certificate."""
        creds = security.faust_broker_kwargs(
            settings(
                kafka_security_protocol="SSL",
                kafka_ssl_ca_location=TLS / "ca.crt",
                kafka_ssl_certificate_location=TLS / "client.crt",
                kafka_ssl_key_location=TLS / "client.key",
            )
        )["broker_credentials"]
        assert isinstance(creds, faust.SSLCredentials) and creds.protocol.value == "SSL"
        assert creds.context.get_ca_certs()[0]["subject"] == ((("commonName", "tagstream-test-client"),),)

    def test_enricher_app_uses_them(self, tmp_path):
        """The enricher's faust app is built with the configured credentials."""
        from services.enricher.app import build_app
        from services.enricher.settings import EnricherSettings

        s = EnricherSettings(
            kafka_bootstrap="kafka:9093",
            data_dir=tmp_path,
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-256",
            kafka_sasl_username="enricher",
            kafka_sasl_password="p",
        )
        app = build_app(s)
        assert app.conf.broker_credentials.username == "enricher"
        assert app.conf.broker_credentials.mechanism.value == "SCRAM-SHA-256"


def _passes_credentials(call: ast.Call) -> bool:
    return any(
        kw.arg is None
        and isinstance(kw.value, ast.Call)
        and getattr(kw.value.func, "id", "") == "faust_broker_kwargs"
        for kw in call.keywords
    )


class TestEveryFaustApp:
    def test_every_faust_app_gets_the_credentials(self):
        """Every faust.App a service builds is given ``**faust_broker_kwargs(settings)``: a faust
        service without it could not connect to a SASL/TLS cluster."""
        apps = []
        for path in sorted((ROOT / "services").rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "App"
                    and getattr(node.func.value, "id", "") == "faust"
                ):
                    apps.append((f"{path.relative_to(ROOT)}:{node.lineno}", _passes_credentials(node)))
        assert apps, "no faust apps found"
        assert [where for where, ok in apps if not ok] == []
