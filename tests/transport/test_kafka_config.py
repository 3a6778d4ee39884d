"""Kafka SASL/TLS settings mapped to each client library's own names, checked by building the
clients themselves (they reject names they do not know), and against the dev broker as far as
it allows: it speaks neither SASL nor (usable) TLS, so a SASL client is refused there while
the plaintext default reaches it unchanged."""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl
import time

import pytest

from features.kafka_config import (
    PLAINTEXT,
    KafkaSecurity,
    KafkaSecurityError,
    aiokafka,
    faust_credentials,
    kafka_python,
    librdkafka,
)
from features.settings import Settings


def scram_ssl(certs) -> KafkaSecurity:
    ca, cert, key = certs
    return KafkaSecurity("sasl_ssl", "scram-sha-512", "svc", "pw", ca, cert, key)


def test_each_library_gets_its_own_names(certs):
    ca, cert, key = certs
    sec = scram_ssl(certs)
    assert sec.protocol == "SASL_SSL" and sec.sasl_mechanism == "SCRAM-SHA-512"
    assert "pw" not in repr(sec)
    assert kafka_python(sec) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc", "sasl_plain_password": "pw", "ssl_check_hostname": True,
        "ssl_cafile": str(ca), "ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    assert librdkafka(sec) == {
        "security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc", "sasl.password": "pw",
        "ssl.endpoint.identification.algorithm": "https", "ssl.ca.location": str(ca),
        "ssl.certificate.location": str(cert), "ssl.key.location": str(key)}
    aio = aiokafka(sec)
    ctx = aio.pop("ssl_context")
    assert aio == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                   "sasl_plain_username": "svc", "sasl_plain_password": "pw"}
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname and ctx.get_ca_certs()[0]["subject"][0][0][1] == "tessera test CA"
    creds = faust_credentials(sec)
    assert (creds.protocol.value, creds.mechanism.value, creds.username) == (
        "SASL_SSL", "SCRAM-SHA-512", "svc")
    plain = KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "svc", "pw")
    assert kafka_python(plain)["security_protocol"] == "SASL_PLAINTEXT"
    assert "ssl_context" not in aiokafka(plain) and "ssl.ca.location" not in librdkafka(plain)
    tls = KafkaSecurity("SSL", ssl_cafile=ca)
    assert kafka_python(tls) == {"security_protocol": "SSL", "ssl_check_hostname": True,
                                 "ssl_cafile": str(ca)}
    assert faust_credentials(tls).protocol.value == "SSL"
    for mapping in (kafka_python, aiokafka, librdkafka):
        assert mapping(PLAINTEXT) == {} and mapping(None) == {}
    assert faust_credentials(PLAINTEXT) is None


def test_the_clients_accept_their_mapping(certs, kafka_bootstrap):
    """kafka-python, aiokafka and librdkafka each build a client from their mapping (all three
    refuse configuration names they do not know: see the last check)."""
    from aiokafka import AIOKafkaConsumer
    from confluent_kafka import KafkaException, Producer
    from kafka import KafkaConsumer, KafkaProducer

    sec = scram_ssl(certs)
    fixed = {"bootstrap_servers": kafka_bootstrap, "api_version": (2, 8, 0)}  # no probe
    producer = KafkaProducer(**fixed, **kafka_python(sec))
    consumer = KafkaConsumer(**fixed, **kafka_python(sec))
    for client in (producer, consumer):
        assert {k: client.config[k] for k in kafka_python(sec)} == kafka_python(sec)
    producer.close(0)
    consumer.close()

    async def aio() -> None:
        c = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, **aiokafka(sec))
        client = c._client
        assert (client._security_protocol, client._sasl_mechanism,
                client._sasl_plain_username) == ("SASL_SSL", "SCRAM-SHA-512", "svc")
        assert isinstance(client._ssl_context, ssl.SSLContext)
        await c.stop()

    # in a thread of its own: an earlier test may leave an event loop running in this one
    # (asyncio.run() then refuses), and the clients need one of their own anyway
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, aio()).result(timeout=60)
    rd = Producer({"bootstrap.servers": kafka_bootstrap, **librdkafka(sec)})
    assert rd.flush(0) == 0
    del rd  # it would keep retrying a TLS handshake with the plaintext broker
    with pytest.raises(KafkaException, match="SCRAM-SHA-1024"):
        Producer({"bootstrap.servers": kafka_bootstrap, **librdkafka(sec),
                  "sasl.mechanism": "SCRAM-SHA-1024"})
    with pytest.raises(Exception, match="Unrecognized configs"):
        KafkaProducer(**fixed, sasl_username="svc")  # librdkafka's name, not kafka-python's


@pytest.mark.integration
def test_sasl_reaches_the_wire_plaintext_is_unchanged(kafka_bootstrap, unique_name):
    """The dev broker has no SASL: a client configured for it fails to bootstrap, the plaintext
    default produces as before -- the settings are what goes on the wire."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    sasl = KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "svc", "pw")
    t0 = time.monotonic()
    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_servers=kafka_bootstrap, bootstrap_timeout_ms=1500,
                      **kafka_python(sasl))
    assert time.monotonic() - t0 < 20
    p = KafkaProducer(bootstrap_servers=kafka_bootstrap, **kafka_python(PLAINTEXT))
    assert p.send(unique_name, b"x").get(timeout=10).offset == 0
    p.close(2)


def test_impossible_combinations_say_what_to_set(certs):
    ca, cert, _ = certs
    cases = [
        (dict(protocol="SASL_PLAIN"), "is not one of"),
        (dict(protocol="SASL_SSL", sasl_username="u", sasl_password="p"), "needs kafka_sasl_mech"),
        (dict(protocol="SASL_SSL", sasl_mechanism="GSSAPI", sasl_username="u",
              sasl_password="p"), "needs kafka_sasl_mech"),
        (dict(protocol="SASL_SSL", sasl_mechanism="PLAIN"), "needs kafka_sasl_username"),
        (dict(sasl_mechanism="PLAIN", sasl_username="u", sasl_password="p"), "use SASL_SSL"),
        (dict(ssl_cafile=ca), "use SSL"),
        (dict(protocol="SSL", ssl_certfile=cert), "go together"),
    ]
    for kwargs, message in cases:
        with pytest.raises(KafkaSecurityError, match=message):
            KafkaSecurity(**kwargs)


def test_settings_from_the_environment(monkeypatch, certs, tmp_path):
    ca, _, _ = certs
    for name, value in {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN",
                        "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "pw",
                        "KAFKA_SSL_CAFILE": str(ca), "TESSERA_HOME": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert "pw" not in repr(settings.kafka_sasl_password)
    sec = KafkaSecurity.from_settings(settings)
    assert sec == KafkaSecurity("SASL_SSL", "PLAIN", "svc", "pw", ca)
    monkeypatch.delenv("KAFKA_SASL_PASSWORD")
    with pytest.raises(KafkaSecurityError, match="kafka_sasl_password"):
        KafkaSecurity.from_settings(Settings.from_env())
