"""Every client mapping's whole output pinned, for each protocol (SASL_SSL with a client
certificate first): the mappings share one SASL/TLS block, so a change to it must show here
for every client at once. The SSL context is compared by what it does (verifies, checks the
host name, trusts our CA, carries our certificate), the rest key by key."""

from __future__ import annotations

import ssl

from features.kafka_config import (
    KafkaSecurity,
    aiokafka,
    faust_credentials,
    kafka_python,
    librdkafka,
)


def _context(ctx: ssl.SSLContext | None) -> tuple | None:
    """What an SSL context does, comparable: verify mode, host check, trusted CA subjects."""
    if ctx is None:
        return None
    assert isinstance(ctx, ssl.SSLContext)
    return (ctx.verify_mode, ctx.check_hostname,
            sorted(c["subject"][0][0][1] for c in ctx.get_ca_certs()))


def _faust(sec: KafkaSecurity) -> dict | None:
    creds = faust_credentials(sec)
    if creds is None:
        return None
    context = getattr(creds, "ssl_context", None) or getattr(creds, "context", None)
    out = {"type": type(creds).__name__, "protocol": creds.protocol.value,
           "context": _context(context)}
    for name in ("mechanism", "username", "password"):
        value = getattr(creds, name, None)
        out[name] = getattr(value, "value", value)
    return out


def _all(sec: KafkaSecurity) -> dict:
    aio = aiokafka(sec)
    if "ssl_context" in aio:
        aio["ssl_context"] = _context(aio["ssl_context"])
    return {"kafka_python": kafka_python(sec), "aiokafka": aio, "librdkafka": librdkafka(sec),
            "faust": _faust(sec)}


VERIFYING = (ssl.CERT_REQUIRED, True, ["tessera test CA"])


def test_sasl_ssl_with_a_client_certificate(certs):
    ca, cert, key = certs
    sec = KafkaSecurity("SASL_SSL", "SCRAM-SHA-256", "svc", "pw", ca, cert, key)
    assert _all(sec) == {
        "kafka_python": {
            "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_plain_username": "svc", "sasl_plain_password": "pw",
            "ssl_check_hostname": True, "ssl_cafile": str(ca), "ssl_certfile": str(cert),
            "ssl_keyfile": str(key)},
        "aiokafka": {
            "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_plain_username": "svc", "sasl_plain_password": "pw",
            "ssl_context": VERIFYING},
        "librdkafka": {
            "security.protocol": "sasl_ssl", "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": "svc", "sasl.password": "pw",
            "ssl.endpoint.identification.algorithm": "https", "ssl.ca.location": str(ca),
            "ssl.certificate.location": str(cert), "ssl.key.location": str(key)},
        "faust": {"type": "SASLCredentials", "protocol": "SASL_SSL", "context": VERIFYING,
                  "mechanism": "SCRAM-SHA-256", "username": "svc", "password": "pw"},
    }


def test_sasl_ssl_with_system_cas_and_no_client_certificate():
    sec = KafkaSecurity("SASL_SSL", "PLAIN", "svc", "pw")
    out = _all(sec)
    assert out["kafka_python"] == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "svc", "sasl_plain_password": "pw", "ssl_check_hostname": True}
    assert out["librdkafka"] == {
        "security.protocol": "sasl_ssl", "sasl.mechanism": "PLAIN", "sasl.username": "svc",
        "sasl.password": "pw", "ssl.endpoint.identification.algorithm": "https"}
    assert out["aiokafka"]["ssl_context"][:2] == (ssl.CERT_REQUIRED, True)
    assert {k: v for k, v in out["aiokafka"].items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "svc", "sasl_plain_password": "pw"}
    assert out["faust"]["type"] == "SASLCredentials"


def test_ssl_without_sasl(certs):
    ca, cert, key = certs
    sec = KafkaSecurity("SSL", ssl_cafile=ca, ssl_certfile=cert, ssl_keyfile=key)
    assert _all(sec) == {
        "kafka_python": {"security_protocol": "SSL", "ssl_check_hostname": True,
                         "ssl_cafile": str(ca), "ssl_certfile": str(cert),
                         "ssl_keyfile": str(key)},
        "aiokafka": {"security_protocol": "SSL", "ssl_context": VERIFYING},
        "librdkafka": {"security.protocol": "ssl",
                       "ssl.endpoint.identification.algorithm": "https",
                       "ssl.ca.location": str(ca), "ssl.certificate.location": str(cert),
                       "ssl.key.location": str(key)},
        "faust": {"type": "SSLCredentials", "protocol": "SSL", "context": VERIFYING,
                  "mechanism": None, "username": None, "password": None},
    }


def test_sasl_plaintext_has_no_tls_anywhere():
    sec = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "svc", "pw")
    out = _all(sec)
    sasl = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "svc", "sasl_plain_password": "pw"}
    assert out["kafka_python"] == sasl and out["aiokafka"] == sasl
    assert out["librdkafka"] == {"security.protocol": "sasl_plaintext",
                                 "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "svc",
                                 "sasl.password": "pw"}
    assert out["faust"] == {"type": "SASLCredentials", "protocol": "SASL_PLAINTEXT",
                            "context": None, "mechanism": "SCRAM-SHA-512", "username": "svc",
                            "password": "pw"}


def test_plaintext_and_none_map_to_nothing():
    for sec in (KafkaSecurity(), None):
        assert kafka_python(sec) == aiokafka(sec) == librdkafka(sec) == {}
        assert faust_credentials(sec) is None
