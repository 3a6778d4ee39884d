"""A source's topics: its own (source.partitions), ``<topic>.dlq`` and ``<topic>.repartition``.

Creation itself is ``features.kafka_admin`` (one admin path for every part of Tessera).
"""

from __future__ import annotations

from collections.abc import Iterable

from features.definitions import EventSource
from features.kafka_admin import DEFAULT_RETENTION_MS, create_topics, delete_topics
from features.kafka_config import KafkaSecurity

__all__ = ["DEFAULT_RETENTION_MS", "delete_topics", "ensure_topics"]


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
    return create_topics(wanted, bootstrap, retention_ms=retention_ms, security=security)
