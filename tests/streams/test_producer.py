"""Producer SDK and topic admin against the real broker."""

from __future__ import annotations

import orjson
import pytest
from kafka import KafkaConsumer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from examples.feature_repo import transactions as demo_source
from features import EventSource
from features.event_schema import decode
from streams.producer import publish
from streams.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def source(kafka_bootstrap, unique_name):
    src = EventSource(unique_name, demo_source.schema, "ts", demo_source.entity, partitions=3)
    yield src
    delete_topics([src.topic, src.dlq_topic, src.repartition_topic], kafka_bootstrap)


def test_topics_get_partitions_dlq_and_explicit_retention(kafka_bootstrap, source):
    assert sorted(ensure_topics([source], kafka_bootstrap, retention_ms=3_600_000)) == sorted(
        [source.topic, source.dlq_topic, source.repartition_topic])
    assert ensure_topics([source], kafka_bootstrap) == []  # idempotent
    c = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    assert len(c.partitions_for_topic(source.topic)) == 3
    assert len(c.partitions_for_topic(source.dlq_topic)) == 1
    assert len(c.partitions_for_topic(source.repartition_topic)) == 3
    c.close()
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    desc = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, source.topic)],
                                  config_filter="all")
    admin.close()
    assert "retention.ms" in str(desc) and "3600000" in str(desc)


def test_publish_validates_keys_by_entity_and_reports_rejections(kafka_bootstrap, source):
    ensure_topics([source], kafka_bootstrap)
    good = [{"user_id": f"u{i % 7}", "merchant_id": "m", "amount": i * 1.5, "country": "FR",
             "ts": 1_790_000_000_000 + i} for i in range(200)]
    bad = [
        {"user_id": "u1", "merchant_id": "m", "amount": "ten", "country": "FR", "ts": 1},
        {"merchant_id": "m", "amount": 1.0, "country": "FR", "ts": 1},
        {"user_id": "u1", "merchant_id": "m", "amount": 1.0, "country": "FR", "ts": "never"},
    ]
    events = good[:50] + bad[:1] + good[50:120] + bad[1:] + good[120:]
    report = publish(source, events, kafka_bootstrap)
    assert report.sent == 200 and report.failed == []
    assert [(r.index, r.field) for r in report.rejected] == [(50, "amount"), (121, "user_id"),
                                                             (122, "ts")]
    c = KafkaConsumer(source.topic, bootstrap_servers=kafka_bootstrap,
                      auto_offset_reset="earliest", consumer_timeout_ms=3000)
    got = list(c)
    c.close()
    assert len(got) == 200
    partitions: dict[bytes, set[int]] = {}
    for m in got:
        partitions.setdefault(m.key, set()).add(m.partition)
        assert decode(source, m.value)["user_id"].encode() == m.key
    assert all(len(p) == 1 for p in partitions.values()) and len(partitions) == 7
    amounts = sorted(orjson.loads(m.value)["amount"] for m in got)
    assert amounts == sorted(e["amount"] for e in good)
