"""HTTP push ingest against the real broker: events land on the partition the SDK picks, with
the SDK's bytes; bad events come back with index/field/reason; unacknowledged events fail the
request with their indexes (a broker killed under the scorer)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from prometheus_client import REGISTRY

from features.definitions import Entity, EventSource
from features.partitioner import home_partition
from serving.http.errors import Guard, install
from serving.ingest.push import PushLimits, PushService
from serving.ingest.routes import push_router
from streams.producer import publish
from tessera.local import start_broker, stop
from tests.serving.http.conftest import running

pytestmark = pytest.mark.integration

USER = Entity("user", ["user_id"])
MAX_BODY = 64 * 1024


def _source(topic: str) -> EventSource:
    # the definition says 4 partitions; the topic has 3: placement must follow the topic
    return EventSource(topic, {"user_id": "string", "amount": "float", "ts": "timestamp"}, "ts",
                       USER, partitions=4)


def _app(service: PushService) -> FastAPI:
    app = FastAPI()
    install(app)
    app.add_middleware(Guard, max_body_bytes=MAX_BODY)
    app.include_router(push_router(service, MAX_BODY))
    return app


def _create(bootstrap: str, *topics: str, partitions: int = 3) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    admin.close()


def _consume(bootstrap: str, topic: str, n: int, partitions: int = 3) -> list:
    c = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=3000)
    c.assign([TopicPartition(topic, p) for p in range(partitions)])
    out = []
    for rec in c:
        out.append(rec)
        if len(out) >= n:
            break
    c.close()
    return out


def _metric(source: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("tessera_push_events_total",
                                     {"source": source, "outcome": outcome}) or 0.0


def test_push_lands_where_the_sdk_puts_it_and_rejects_bad_events(kafka_bootstrap, unique_name):
    src = _source(unique_name)
    sdk_src = EventSource(f"{unique_name}-sdk", src.schema, "ts", USER, partitions=4)
    _create(kafka_bootstrap, src.topic, sdk_src.topic)
    good = [{"user_id": f"u{i}", "amount": i * 1.5, "ts": 1_790_000_000_000 + i}
            for i in range(60)]
    bad = {3: {"user_id": "u3", "amount": "12", "ts": 1},  # a string amount
           7: {"user_id": "u7", "ts": "2026-12-01T00:00:00Z"},  # amount missing
           11: ["not", "an", "object"],
           20: {"user_id": "", "amount": 1.0, "ts": 1},  # empty entity key
           30: {"user_id": "u30", "amount": 1.0, "ts": "yesterday"}}
    events = [bad.get(i, e) for i, e in enumerate(good)]
    service = PushService({src.name: src}, kafka_bootstrap, PushLimits(max_events=100))
    try:
        with running(_app(service)) as url:
            r = httpx.post(f"{url}/v1/push/{src.name}", json=events, timeout=30)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["accepted"] == 55 and body["rejected_count"] == 5
            got = {x["index"]: (x["field"], x["reason"]) for x in body["rejected"]}
            assert sorted(got) == sorted(bad)
            assert got[3][0] == "amount" and "number" in got[3][1]
            assert got[7][0] == "amount" and "missing" in got[7][1]
            assert got[11][0] is None and "object" in got[11][1]
            assert got[20][0] == "user_id" and "empty" in got[20][1]
            assert got[30][0] == "ts" and "parse" in got[30][1]
            assert _metric(src.name, "accepted") == 55
            assert _metric(src.name, "rejected") == 5

            # nothing valid: 422, nothing published
            r = httpx.post(f"{url}/v1/push/{src.name}", json=[bad[3], bad[7]], timeout=30)
            assert r.status_code == 422 and r.json()["code"] == "invalid_events"
            assert [x["index"] for x in r.json()["rejected"]] == [0, 1]
            # the request itself is wrong
            for payload, status, code in (
                (b'{"user_id": "u1"}', 400, "invalid_json"), (b"[", 400, "invalid_json"),
                (b"[]", 400, "invalid_field"), (b"[" + b"{}," * 100 + b"{}]", 400,
                                                "too_many_events"),
                (b"[" + b" " * MAX_BODY + b"]", 413, "body_too_large")):
                r = httpx.post(f"{url}/v1/push/{src.name}", content=payload, timeout=30)
                assert (r.status_code, r.json()["code"]) == (status, code), r.text
            r = httpx.post(f"{url}/v1/push/nope", json=good[:1], timeout=30)
            assert r.status_code == 404 and r.json()["field"] == "source"
        assert service.sink._producer is None  # the app's shutdown flushed and closed it
    finally:
        service.close()

    valid = [e for i, e in enumerate(good) if i not in bad]
    pushed = _consume(kafka_bootstrap, src.topic, len(valid))
    assert len(pushed) == len(valid)  # nothing else was published (the 422 sent nothing)
    report = publish(sdk_src, valid, kafka_bootstrap)
    assert report.sent == len(valid)
    by_sdk = {r.key: (r.partition, r.value) for r in
              _consume(kafka_bootstrap, sdk_src.topic, len(valid))}
    for rec in pushed:
        assert rec.partition == home_partition(rec.key.decode(), 3)
        assert (rec.partition, rec.value) == by_sdk[rec.key]  # same partition, same bytes
    assert len({r.partition for r in pushed}) == 3
    # per partition, the request's order is kept
    for p in range(3):
        keys = [r.key.decode() for r in pushed if r.partition == p]
        assert keys == [e["user_id"] for e in valid if home_partition(e["user_id"], 3) == p]


def test_unacknowledged_events_fail_the_request(tmp_path, unique_name):
    """A broker that dies after the topic is known: every event comes back as failed, by
    index, in a 503 that says how many were not accepted (none is counted accepted)."""
    proc, bootstrap = start_broker(tmp_path / "broker")
    src = _source(unique_name)
    service = PushService({src.name: src}, bootstrap, delivery_timeout_ms=1500,
                          metadata_timeout_s=1)
    try:
        _create(bootstrap, src.topic)
        events = [{"user_id": f"u{i}", "amount": 1.0, "ts": 1_790_000_000_000} for i in range(20)]
        with running(_app(service)) as url:
            r = httpx.post(f"{url}/v1/push/{src.name}", json=events[:2], timeout=30)
            assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
            proc.kill()  # a crash: SIGTERM lets Tansu drain its connections for ~5 s
            proc.wait(5)
            events[4] = {"user_id": "u4"}
            r = httpx.post(f"{url}/v1/push/{src.name}", json=events, timeout=30)
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["code"] == "publish_failed" and body["accepted"] == 0
            assert "19 of 19 valid events were not acknowledged" in body["error"]
            assert [f["index"] for f in body["failed"]] == [i for i in range(20) if i != 4]
            assert [x["index"] for x in body["rejected"]] == [4]
            assert _metric(src.name, "failed") == 19
        # a broker that is not there at all: nothing published, a 503 naming the broker
        service.sink._partitions.clear()
        with running(_app(service)) as url:
            r = httpx.post(f"{url}/v1/push/{src.name}", json=events[:1], timeout=30)
            assert r.status_code == 503 and r.json()["code"] == "broker_unavailable", r.text
    finally:
        service.close()
        stop(proc)


def test_push_without_a_broker_is_a_clear_503(unique_name):
    src = _source(unique_name)
    with running(_app(PushService({src.name: src}, None))) as url:
        r = httpx.post(f"{url}/v1/push/{src.name}", json=[{}], timeout=10)
    assert r.status_code == 503 and r.json()["code"] == "push_disabled"
    assert "KAFKA_BOOTSTRAP" in r.json()["error"]
