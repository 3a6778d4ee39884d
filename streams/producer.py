"""Producer SDK: validate each event against its source schema, key it by entity, send it.

Validation uses ``features.event_schema`` — the very code the worker decodes with — so an event
the producer accepts is an event the worker accepts. Rejected events are returned with the field
and reason; nothing is dropped silently. Sends use acks=all and linger to batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kafka import KafkaProducer

from features.definitions import EventSource
from features.errors import SchemaError
from features.event_schema import encode, key_of, normalize
from features.kafka_config import KafkaSecurity, kafka_python


@dataclass
class Rejection:
    index: int
    field: str | None
    reason: str


@dataclass
class PublishReport:
    """What happened to every event handed to ``publish``: sent + rejected + failed = total."""

    sent: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    failed: list[Rejection] = field(default_factory=list)
    last_offsets: dict[int, int] = field(default_factory=dict)  # partition -> last acked offset

    @property
    def total(self) -> int:
        return self.sent + len(self.rejected) + len(self.failed)


def make_producer(bootstrap: str, linger_ms: int = 20, security: KafkaSecurity | None = None,
                  **config) -> KafkaProducer:
    """The SDK's producer; ``config`` overrides kafka-python settings (e.g. timeouts)."""
    return KafkaProducer(**{
        **kafka_python(security),
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "linger_ms": linger_ms,
        "batch_size": 512 * 1024,
        "max_request_size": 8 * 1024 * 1024,
        "retries": 5,
        "client_id": "tessera-producer",
        **config,
    })


class Publisher:
    """A long-lived producer for one source (use as a context manager)."""

    def __init__(self, source: EventSource, bootstrap: str, linger_ms: int = 20,
                 security: KafkaSecurity | None = None, **config) -> None:
        self.source = source
        self.producer = make_producer(bootstrap, linger_ms, security, **config)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()

    def send_raw(self, value: bytes, key: str | None = None):
        """Send bytes unvalidated (tests, and the generator's deliberately malformed events);
        returns the send future."""
        return self.producer.send(self.source.topic, value=value,
                                  key=key.encode() if key else None)

    def publish(
        self,
        events: Iterable[dict],
        progress: Callable[[int], None] | None = None,
    ) -> PublishReport:
        """Validate, key and send ``events``; wait for every ack; report per-event failures.

        An item may be a ``SchemaError`` (a file line that was not JSON): it is reported."""
        report = PublishReport()
        futures = []
        topic = self.source.topic
        send = self.producer.send
        n = 0
        for i, obj in enumerate(events):
            n = i + 1
            if isinstance(obj, SchemaError):  # the reader could not even parse it
                report.rejected.append(Rejection(i, obj.field, str(obj)))
                continue
            try:
                ev = normalize(self.source, obj)
            except SchemaError as e:
                report.rejected.append(Rejection(i, e.field, str(e)))
                continue
            futures.append((i, send(topic, value=encode(self.source, ev),
                                    key=key_of(self.source, ev).encode())))
            if progress is not None and n % 1000 == 0:
                progress(1000)
        if progress is not None and n % 1000:
            progress(n % 1000)
        self.producer.flush()
        for i, fut in futures:
            try:
                md = fut.get(timeout=30)
                report.sent += 1
                if md.offset > report.last_offsets.get(md.partition, -1):
                    report.last_offsets[md.partition] = md.offset
            except Exception as e:  # noqa: BLE001 - reported per event, never swallowed
                report.failed.append(Rejection(i, None, f"broker did not ack: {e}"))
        return report


def publish(
    source: EventSource,
    events: Iterable[dict],
    bootstrap: str,
    progress: Callable[[int], None] | None = None,
    security: KafkaSecurity | None = None,
) -> PublishReport:
    """One-shot: validate and send ``events`` to ``source``'s topic, return the report."""
    with Publisher(source, bootstrap, security=security) as pub:
        return pub.publish(events, progress)
