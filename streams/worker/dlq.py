"""Dead letters: invalid events go to ``<topic>.dlq`` with the reason and the original bytes.

The record value is JSON: ``{"error", "field", "topic", "partition", "offset", "value"}`` where
``value`` is the original message, base64-encoded (it may not be valid UTF-8 or JSON); the
original key is kept as the record key. Dead letters of offsets already applied (at or below
the Redis watermark) are not re-sent on replay.
"""

from __future__ import annotations

import base64

import orjson
from kafka import KafkaProducer

from features.errors import SchemaError


def dead_letter(topic: str, partition: int, offset: int, raw: bytes, err: SchemaError) -> bytes:
    return orjson.dumps({
        "error": str(err),
        "field": err.field,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "value": base64.b64encode(raw).decode(),
    })


def original(dead: bytes) -> bytes:
    """The original message bytes held in a dead letter."""
    return base64.b64decode(orjson.loads(dead)["value"])


class DeadLetters:
    def __init__(self, bootstrap: str, dlq_topic: str) -> None:
        self.topic = dlq_topic
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                      client_id="tessera-dlq")
        self.sent = 0

    def send(self, items: list[tuple[bytes | None, bytes]]) -> None:
        """Send (key, dead letter) pairs and wait for their acks."""
        if not items:
            return
        futs = [self.producer.send(self.topic, key=k, value=v) for k, v in items]
        self.producer.flush()
        for f in futs:
            f.get(timeout=30)
        self.sent += len(items)

    def close(self) -> None:
        self.producer.close(timeout=5)
