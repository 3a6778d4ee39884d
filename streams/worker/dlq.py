"""Dead letters: records the worker cannot apply go to ``<topic>.dlq`` unchanged, with the reason
in headers.

As Kafka Connect's dead-letter queue does, the dead letter's value and key are the original
record's bytes (a null value stays null), and its original headers are kept; the context is
added as headers: ``tessera.reason`` (a code: ``invalid_json``, ``invalid_event``,
``null_value``, ``empty_value``, ``future_timestamp``), ``tessera.error`` (the message),
``tessera.field``, ``tessera.topic``, ``tessera.partition``, ``tessera.offset`` and
``tessera.epoch``. Nothing is re-encoded, so a record the broker accepted fits as a dead letter
whatever its size or bytes, and replaying one is producing its value again. Dead letters of
offsets already applied (at or below the Redis watermark) are not re-sent on replay.
"""

from __future__ import annotations

from dataclasses import dataclass

from kafka import KafkaProducer

from features.errors import SchemaError
from features.kafka_config import KafkaSecurity, kafka_python

HEADER_PREFIX = "tessera."
# dead letters are as large as the records they carry; the broker's own limit applies
MAX_REQUEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def dead_letter(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                headers: list[tuple[str, bytes]] | tuple, err: SchemaError,
                epoch: int = 0) -> DeadLetter:
    ctx = {
        "reason": err.reason,
        "error": str(err),
        "field": err.field or "",
        "topic": topic,
        "partition": str(partition),
        "offset": str(offset),
        "epoch": str(epoch),
    }
    own = [(HEADER_PREFIX + k, v.encode()) for k, v in ctx.items()]
    kept = [(k, v) for k, v in (headers or ()) if not k.startswith(HEADER_PREFIX)]
    return DeadLetter(key, value, kept + own)


def context(headers: list[tuple[str, bytes]] | tuple) -> dict[str, str]:
    """The ``tessera.*`` headers of a dead letter, without the prefix."""
    n = len(HEADER_PREFIX)
    return {k[n:]: v.decode() for k, v in headers or () if k.startswith(HEADER_PREFIX)}


class DeadLetters:
    def __init__(self, bootstrap: str, dlq_topic: str,
                 security: KafkaSecurity | None = None) -> None:
        self.topic = dlq_topic
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                      client_id="tessera-dlq", max_request_size=MAX_REQUEST_BYTES,
                                      **kafka_python(security))
        self.sent = 0
        self.by_reason: dict[str, int] = {}

    def send(self, letters: list[DeadLetter]) -> None:
        """Send dead letters and wait for their acks (a failure propagates: the batch is not
        applied and a restart replays it)."""
        if not letters:
            return
        futs = [self.producer.send(self.topic, key=d.key, value=d.value, headers=d.headers)
                for d in letters]
        self.producer.flush()
        for f in futs:
            f.get(timeout=30)
        self.sent += len(letters)
        for d in letters:
            reason = context(d.headers).get("reason", "")
            self.by_reason[reason] = self.by_reason.get(reason, 0) + 1

    def close(self) -> None:
        self.producer.close(timeout=5)
