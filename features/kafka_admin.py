"""Kafka topic administration, for every part of Tessera (sources, logs, tests).

``retention.ms`` is set explicitly at creation because some brokers (Tansu) describe only
explicit configs, and clients that read it would otherwise fail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from features.kafka_config import KafkaSecurity, kafka_python

DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000


def _admin(bootstrap: str, security: KafkaSecurity | None):
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tessera-admin",
                            request_timeout_ms=10_000, **kafka_python(security))


def create_topics(topics: Mapping[str, int] | Iterable[str], bootstrap: str, *,
                  partitions: int = 4, retention_ms: int = DEFAULT_RETENTION_MS,
                  security: KafkaSecurity | None = None) -> list[str]:
    """Create the missing ``topics`` (names with their partition counts, or names that get
    ``partitions``); returns the names created. Existing topics are left as they are."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = dict(topics) if isinstance(topics, Mapping) else dict.fromkeys(topics, partitions)
    admin = _admin(bootstrap, security)
    try:
        existing = set(admin.list_topics())
        created = []
        for name, parts in wanted.items():  # one at a time: a racing creator costs an "exists"
            if name in existing:
                continue
            try:
                admin.create_topics([NewTopic(name, parts, 1, topic_configs={
                    "retention.ms": str(retention_ms)})])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def delete_topics(topics: Iterable[str], bootstrap: str, *,
                  security: KafkaSecurity | None = None) -> None:
    """Delete topics (tests and benchmarks: the in-memory broker keeps everything in RAM)."""
    from kafka.errors import UnknownTopicOrPartitionError

    admin = _admin(bootstrap, security)
    try:
        for name in topics:
            try:
                admin.delete_topics([name])
            except UnknownTopicOrPartitionError:
                pass
    finally:
        admin.close()
