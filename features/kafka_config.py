"""Kafka SASL and TLS, configured once and spelt the way each client library wants it.

Settings (``kafka_security_protocol``, ``kafka_sasl_mechanism``, ``kafka_sasl_username``,
``kafka_sasl_password``, ``kafka_ssl_cafile``/``_certfile``/``_keyfile``) become one
``KafkaSecurity``; every client is built with the keyword arguments of one of the mappings
below, because the three libraries we use name the same things differently:

- kafka-python (``KafkaProducer``/``KafkaConsumer``/``KafkaAdminClient``): ``security_protocol``,
  ``sasl_plain_username``, ``ssl_cafile``...;
- aiokafka (the worker's group consumer): the same SASL names but an ``ssl_context`` object
  instead of file names;
- librdkafka (``confluent_kafka.Producer``, the push endpoint): dotted ``security.protocol``,
  ``sasl.username``, ``ssl.ca.location``...;
- faust (the app hosting the worker): ``broker_credentials``.

The default (``PLAINTEXT``) maps to no arguments at all, so a plaintext dev broker sees exactly
the clients it saw before.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.errors import TesseraError

if TYPE_CHECKING:
    from features.settings import Settings

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSecurityError(TesseraError, ValueError):
    """Kafka security settings that cannot work together, with what to set instead."""


@dataclass(frozen=True)
class KafkaSecurity:
    """How clients authenticate to the brokers and whether the connection is TLS."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def __post_init__(self) -> None:
        protocol = self.protocol.upper()
        object.__setattr__(self, "protocol", protocol)
        if protocol not in PROTOCOLS:
            raise KafkaSecurityError(f"kafka_security_protocol {self.protocol!r} is not one of "
                                     f"{', '.join(PROTOCOLS)}")
        if self.sasl:
            if self.sasl_mechanism is None or self.sasl_mechanism.upper() not in MECHANISMS:
                raise KafkaSecurityError(
                    f"{protocol} needs kafka_sasl_mechanism, one of {', '.join(MECHANISMS)} "
                    f"(got {self.sasl_mechanism!r})")
            object.__setattr__(self, "sasl_mechanism", self.sasl_mechanism.upper())
            if not self.sasl_username or self.sasl_password is None:
                raise KafkaSecurityError(f"{protocol} needs kafka_sasl_username and "
                                         "kafka_sasl_password (KAFKA_SASL_PASSWORD)")
        elif self.sasl_mechanism or self.sasl_username or self.sasl_password:
            raise KafkaSecurityError(
                f"SASL credentials are set but kafka_security_protocol is {protocol}; use "
                "SASL_SSL (or SASL_PLAINTEXT on a trusted network) to send them")
        if not self.tls and any((self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile)):
            raise KafkaSecurityError(
                f"kafka_ssl_* files are set but kafka_security_protocol is {protocol}; use SSL "
                "or SASL_SSL to connect with TLS")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise KafkaSecurityError("kafka_ssl_certfile and kafka_ssl_keyfile go together")

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaSecurity:
        pw = settings.kafka_sasl_password
        return cls(settings.kafka_security_protocol, settings.kafka_sasl_mechanism,
                   settings.kafka_sasl_username, None if pw is None else pw.get_secret_value(),
                   settings.kafka_ssl_cafile, settings.kafka_ssl_certfile,
                   settings.kafka_ssl_keyfile)

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying client context (system CAs, or ``ssl_cafile``; the client certificate
        for mutual TLS), or None without TLS."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=None if self.ssl_cafile is None
                                         else str(self.ssl_cafile))
        if self.ssl_certfile is not None:
            ctx.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile))
        return ctx


PLAINTEXT = KafkaSecurity()


# What each library calls the same settings, in one order: protocol, SASL mechanism, user,
# password, CA file, client certificate, its key. aiokafka kept kafka-python's names (but takes
# an SSL context instead of the files).
_KAFKA_PYTHON = ("security_protocol", "sasl_mechanism", "sasl_plain_username",
                 "sasl_plain_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile")
_LIBRDKAFKA = ("security.protocol", "sasl.mechanism", "sasl.username", "sasl.password",
               "ssl.ca.location", "ssl.certificate.location", "ssl.key.location")


def _plaintext(sec: KafkaSecurity | None) -> bool:
    return sec is None or sec.protocol == "PLAINTEXT"


def _spelt(sec: KafkaSecurity, names: tuple[str, ...], files: bool = True) -> dict[str, Any]:
    """The one SASL/TLS block, under one library's ``names``: the protocol, the SASL
    credentials when SASL is on, the TLS files that are set when TLS is on (and ``files``)."""
    protocol, mechanism, username, password, cafile, certfile, keyfile = names
    out: dict[str, Any] = {protocol: sec.protocol}
    if sec.sasl:
        out |= {mechanism: sec.sasl_mechanism, username: sec.sasl_username,
                password: sec.sasl_password}
    if sec.tls and files:
        if sec.ssl_cafile is not None:
            out[cafile] = str(sec.ssl_cafile)
        if sec.ssl_certfile is not None:
            out |= {certfile: str(sec.ssl_certfile), keyfile: str(sec.ssl_keyfile)}
    return out


def kafka_python(sec: KafkaSecurity | None) -> dict[str, Any]:
    """Keyword arguments of kafka-python's ``KafkaProducer``, ``KafkaConsumer`` and
    ``KafkaAdminClient``."""
    if _plaintext(sec):
        return {}
    out = _spelt(sec, _KAFKA_PYTHON)
    if sec.tls:
        out["ssl_check_hostname"] = True
    return out


def aiokafka(sec: KafkaSecurity | None) -> dict[str, Any]:
    """Keyword arguments of aiokafka's ``AIOKafkaConsumer``/``AIOKafkaProducer`` (TLS as an
    ``ssl_context``: aiokafka takes no file names)."""
    if _plaintext(sec):
        return {}
    out = _spelt(sec, _KAFKA_PYTHON, files=False)
    if sec.tls:
        out["ssl_context"] = sec.ssl_context()
    return out


def librdkafka(sec: KafkaSecurity | None) -> dict[str, str]:
    """Configuration entries of ``confluent_kafka.Producer`` (librdkafka's dotted names)."""
    if _plaintext(sec):
        return {}
    out = _spelt(sec, _LIBRDKAFKA) | {"security.protocol": sec.protocol.lower()}
    if sec.tls:
        out["ssl.endpoint.identification.algorithm"] = "https"
    return out


def faust_credentials(sec: KafkaSecurity | None) -> Any:
    """``faust.App(broker_credentials=...)``: None for plaintext."""
    if _plaintext(sec):
        return None
    import faust

    if sec.sasl:
        return faust.SASLCredentials(username=sec.sasl_username, password=sec.sasl_password,
                                     ssl_context=sec.ssl_context(),
                                     mechanism=sec.sasl_mechanism)
    return faust.SSLCredentials(sec.ssl_context())
