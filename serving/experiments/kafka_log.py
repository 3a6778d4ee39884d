"""Prediction and outcome records to Kafka (kafka-python), never on the request's time.

``KafkaRecordLog.log`` is a non-blocking put into a bounded queue; a background thread gathers
what arrived over ``linger_s`` and produces it as Kafka messages of up to ``per_message``
records each (a JSON array). kafka-python's ``send`` is pure Python and costs tens of µs per
message; paying it per record would compete with requests for the GIL, paying it per batch
does not. When the queue is full, records are dropped and counted (``dropped``): losing a log
line is better than slowing a prediction, and the count makes the loss visible.
"""

from __future__ import annotations

import orjson
from kafka import KafkaProducer

from features.kafka_config import KafkaSecurity, kafka_python
from serving.experiments.background import BoundedWorker
from serving.experiments.records import OutcomeRecord, PredictionRecord, expand
from serving.experiments.shadow import ShadowBatch

PREDICTIONS_TOPIC = "tessera-predictions"
OUTCOMES_TOPIC = "outcomes"


class KafkaRecordLog:
    """Produces records in JSON-array messages (the sink also accepts single-object messages)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = PREDICTIONS_TOPIC,
        maxsize: int = 100_000,
        linger_ms: int = 50,
        per_message: int = 256,
        security: KafkaSecurity | None = None,
    ) -> None:
        self.topic = topic
        self.per_message = per_message
        self._producer = KafkaProducer(
            **kafka_python(security),
            bootstrap_servers=bootstrap,
            linger_ms=linger_ms,
            batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
            acks=1,
            enable_idempotence=False,
            client_id="tessera-prediction-log",
        )
        self._worker: BoundedWorker = BoundedWorker(
            self._send,
            maxsize=maxsize,
            batch=4096,
            name=f"log-{topic}",
            linger_s=linger_ms / 1000,
        )

    def log(self, record: PredictionRecord | OutcomeRecord | ShadowBatch) -> bool:
        return self._worker.submit(record)

    __call__ = log

    def _send(self, items: list) -> None:
        records = expand(items)
        k = self.per_message
        for i in range(0, len(records), k):
            self._producer.send(self.topic, value=orjson.dumps(records[i : i + k]))

    @property
    def dropped(self) -> int:
        return self._worker.dropped

    @property
    def sent(self) -> int:
        return self._worker.handled

    def close(self, timeout: float = 10.0) -> None:
        """Send everything queued, flush the producer and close it."""
        self._worker.close(timeout)
        self._producer.flush(timeout)
        self._producer.close(timeout)
