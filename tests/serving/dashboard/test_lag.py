"""Consumer lag on the dashboard: applied offsets in Redis vs. records on a real broker."""

from __future__ import annotations

import threading
import time

import pytest
from kafka import KafkaProducer

from features import Aggregate, Entity, EventSource, FeatureRepo, FeatureView
from features.kafka_admin import create_topics, delete_topics
from features.online.layout import offset_key
from features.registry import apply
from features.settings import Settings
from serving.dashboard.lag import (
    NO_WATERMARK,
    EndOffsets,
    applied_offsets,
    lag_by_topic,
    worker_lag,
)
from serving.dashboard.sources import from_settings


def test_lag_is_produced_minus_applied_per_topic_slowest_group_first():
    applied = {("g1", "t", 0): 9, ("g1", "t", 1): 4, ("g2", "t", 0): 2, ("g2", "t", 1): 4,
               ("g1", "u", 0): 0}
    ends = {("t", 0): 10, ("t", 1): 8, ("u", 0): None}
    # g1: (10 - 10) + (8 - 5) = 3; g2: (10 - 3) + (8 - 5) = 10; u: end unknown
    assert lag_by_topic(applied, ends) == {"t": 10, "u": NO_WATERMARK}
    # an applied offset past the end (a stale end) counts as caught up, never negative
    assert lag_by_topic({("g", "t", 0): 50}, {("t", 0): 10}) == {"t": 0}


@pytest.mark.integration
def test_end_offsets_count_the_records_of_the_last_batch(kafka_bootstrap, unique_name):
    create_topics([unique_name], kafka_bootstrap, partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50)
    try:
        for _batch in range(3):  # three batches of 10 on partition 0, one of 4 on partition 1
            for _ in range(10):
                producer.send(unique_name, b"x", partition=0)
            producer.flush()
        for _ in range(4):
            producer.send(unique_name, b"y", partition=1)
        producer.flush()
        ends = EndOffsets(kafka_bootstrap)
        try:
            assert ends([(unique_name, 0), (unique_name, 1)]) == {
                (unique_name, 0): 30, (unique_name, 1): 4}
            # a producer that never stops: the probe reads one last batch, it does not chase it
            sent, stop = [0], threading.Event()

            def produce() -> None:
                while not stop.is_set():
                    producer.send(unique_name, b"z", partition=1)
                    producer.flush()
                    sent[0] += 1

            busy = threading.Thread(target=produce, daemon=True)
            busy.start()
            try:
                time.sleep(0.3)
                before = 4 + sent[0]
                end = ends([(unique_name, 1)])[(unique_name, 1)]
            finally:
                stop.set()
                busy.join(5)
            assert before <= end <= 4 + sent[0]
            assert ends([("no-such-topic-" + unique_name, 0)]) in (
                {("no-such-topic-" + unique_name, 0): None},
                {("no-such-topic-" + unique_name, 0): 0},
            )
        finally:
            ends.close()
    finally:
        producer.close()
        delete_topics([unique_name], kafka_bootstrap)


@pytest.mark.integration
def test_freshness_panel_shows_each_views_lag(
    kafka_bootstrap, redis_url, redis_client, unique_name, tmp_path
):
    user = Entity("user", ["user_id"])
    src = EventSource("pay", {"user_id": "string", "ts": "timestamp"}, "ts", user,
                      topic=unique_name, partitions=2)
    settings = Settings(tmp_path, kafka_bootstrap, redis_url)
    apply(FeatureRepo.of([FeatureView("pay_count", src, [Aggregate("count", ["1h"])])]),
          settings)
    create_topics([unique_name], kafka_bootstrap, partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50)
    try:
        for p, n in ((0, 25), (1, 7)):
            for _ in range(n):
                producer.send(unique_name, b"{}", partition=p)
        producer.flush()
        # the worker applied offsets 0..19 of partition 0 and all of partition 1
        redis_client.set(offset_key("g", unique_name, 0), 19)
        redis_client.set(offset_key("g", unique_name, 1), 6)
        assert applied_offsets(redis_client)[("g", unique_name, 0)] == 19
        rows = from_settings(settings, cache_s=0).snapshot()["freshness"]["rows"]
        assert rows == [{"view": "pay_count", "age_s": None, "lag": 5}]
        redis_client.set(offset_key("g", unique_name, 0), 24)
        rows = from_settings(settings, cache_s=0).snapshot()["freshness"]["rows"]
        assert rows[0]["lag"] == 0
    finally:
        producer.close()
        delete_topics([unique_name], kafka_bootstrap)


def test_cached_reports_are_computed_once_per_ttl_and_failures_are_not_kept(monkeypatch):
    from serving.dashboard import data

    calls, clock = [], [100.0]
    monkeypatch.setattr(data.time, "monotonic", lambda: clock[0])

    def report():
        calls.append(clock[0])
        if len(calls) == 2:
            raise RuntimeError("log being rewritten")
        return [{"n": len(calls)}]

    read = data.cached(report, ttl_s=10)
    assert read() == read() == [{"n": 1}] and len(calls) == 1
    clock[0] += 10.5
    with pytest.raises(RuntimeError):
        read()
    assert read() == [{"n": 3}]  # the failure was retried, not served from the cache
    assert data.cached(report, ttl_s=0) is report


def test_applied_offsets_on_every_topology(any_redis_url):
    """Offset keys spread over every node of a cluster (``MGET`` of keys in different slots is
    refused there): read one round trip per node, as on one Redis."""
    from features.online.cluster import by_node, connect, primaries

    client = connect(any_redis_url)
    try:
        for node in primaries(client):
            node.flushall()
        want = {(f"g{g}", f"topic{t}", p): 10 * g + t + p
                for g in range(2) for t in range(3) for p in range(4)}
        keys = [offset_key(*k) for k in want]
        for key, off in zip(keys, want.values(), strict=True):
            client.set(key, f"{off}:0:1")
        if any_redis_url.startswith("redis+cluster"):
            assert len(by_node(client, keys)) == 3
        assert applied_offsets(client) == want
        ends = {(t, p): 100 for _, t, p in want}
        lag = worker_lag(client, lambda parts: {tp: ends[tp] for tp in parts})()
        assert lag == {f"topic{t}": max(sum(99 - (10 * g + t + p) for p in range(4))
                                        for g in range(2)) for t in range(3)}
    finally:
        client.close()
