"""Topic administration: a source's topic with its partition count, and its dead-letter topic.

``retention.ms`` is set explicitly at creation because some brokers (Tansu) describe only
explicit configs, and clients that read it would otherwise fail.
"""

from __future__ import annotations

from collections.abc import Iterable

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from features.definitions import EventSource
from features.kafka_config import KafkaSecurity, kafka_python

DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000


def _admin(bootstrap: str, security: KafkaSecurity | None = None) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tessera-admin",
                            request_timeout_ms=10_000, **kafka_python(security))


def ensure_topics(
    sources: Iterable[EventSource], bootstrap: str, retention_ms: int = DEFAULT_RETENTION_MS,
    repartition_partitions: int | None = None, security: KafkaSecurity | None = None,
) -> list[str]:
    """Create each source's topic (source.partitions), ``<topic>.dlq`` (1 partition) and
    ``<topic>.repartition`` (source.partitions: events that arrived off their entity's home
    partition) if missing; returns the names created. Existing topics are left as they are."""
    wanted: dict[str, int] = {}
    for s in sources:
        wanted[s.topic] = s.partitions
        wanted[s.dlq_topic] = 1
        wanted[s.repartition_topic] = repartition_partitions or s.partitions
    admin = _admin(bootstrap, security)
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(name, parts, 1, topic_configs={"retention.ms": str(retention_ms)})
            for name, parts in wanted.items()
            if name not in existing
        ]
        created = []
        for topic in new:  # one at a time: a concurrent creator only costs us an "exists"
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def delete_topics(names: Iterable[str], bootstrap: str,
                  security: KafkaSecurity | None = None) -> None:
    """Delete topics (tests and benchmarks: the in-memory broker keeps everything in RAM)."""
    admin = _admin(bootstrap, security)
    try:
        for name in names:
            try:
                admin.delete_topics([name])
            except UnknownTopicOrPartitionError:
                pass
    finally:
        admin.close()
