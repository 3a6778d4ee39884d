"""Where ``POST /v1/outcomes`` writes labels: the outcome log the experiment report reads.

With a broker (``KAFKA_BOOTSTRAP``) a label is produced to the ``outcomes`` topic and the call
waits for the broker's acknowledgement; `tessera experiment sink` copies the topic to Parquet
exactly once in effect. Without one, labels are committed straight into the outcome dataset
(``{offline}/experiments/outcomes``, ``offline`` being ``Settings.offline_location``, a folder or
a bucket) as one more manifest file, under a file lock (on disk) or the manifest's conditional
put (in a bucket) so several server processes never lose each other's manifest entries.
"""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path
from typing import Protocol

import orjson
import polars as pl

from features.kafka_config import KafkaSecurity, kafka_python


class OutcomeLog(Protocol):
    def write(self, rows: list[dict]) -> None:
        """Store ``rows`` (OutcomeRecord fields) durably or raise."""


class KafkaOutcomeLog:
    """Connects at the first write (the scorer must start while Kafka is down; until it is up,
    outcome posts answer 503 and can be retried)."""

    def __init__(self, bootstrap: str, topic: str = "outcomes", timeout_s: float = 5.0,
                 security: KafkaSecurity | None = None) -> None:
        self.bootstrap, self.security = bootstrap, security
        self.topic = topic
        self.timeout_s = timeout_s
        self._producer = None
        self._lock = threading.Lock()

    def _connect(self):
        from kafka import KafkaProducer

        from features.kafka_admin import create_topics

        with self._lock:
            if self._producer is None:
                create_topics([self.topic], self.bootstrap, security=self.security)
                self._producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                               client_id="tessera-outcomes-http",
                                               **kafka_python(self.security))
            return self._producer

    def write(self, rows: list[dict]) -> None:
        producer = self._producer or self._connect()
        producer.send(self.topic, value=orjson.dumps(rows)).get(timeout=self.timeout_s)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(5)


class ParquetOutcomeLog:
    """``folder``: a local folder or a bucket URI (``dataset_dirs(offline_location)[1]``). In a
    bucket there is no file lock: the manifest's conditional put keeps every server's commit."""

    def __init__(self, folder: Path | str) -> None:
        from features.offline.storage import is_uri

        self.folder: Path | str = folder if is_uri(folder) else Path(folder)

    def write(self, rows: list[dict]) -> None:
        from serving.experiments.records import OUTCOME_SCHEMA
        from serving.experiments.sink import import_frame

        frame = pl.from_arrow(_table(rows, OUTCOME_SCHEMA))
        if not isinstance(self.folder, Path):
            import_frame(self.folder, frame)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".outcomes.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            import_frame(self.folder, frame)

    def close(self) -> None:
        pass


def _table(rows: list[dict], schema):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=schema)
