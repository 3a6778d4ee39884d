"""Faults an operator meets, on the real broker and Redis, each checked against the brute-force
reference (not only the skew check: both stores can be wrong the same way).

Foreign producers are confluent-kafka (librdkafka), as a Go or .NET service would be.
"""

from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition

from features.event_schema import decode, key_of, us_to_iso
from features.offline.event_log import EventLog
from features.online.layout import STORE_KEY, applied_offset, offset_key, store_readiness
from streams.generate import transactions
from streams.partitioner import home_partition
from streams.topics import delete_topics, ensure_topics
from streams.worker.dlq import context
from tests.streams.conftest import wait_for
from tests.streams.test_worker import (
    HOUR_US,
    Produced,
    check_exactly_once,
    produce,
    wait_done,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]


def foreign_producer(env, **conf) -> Producer:
    return Producer({"bootstrap.servers": env.bootstrap, "acks": "all", "linger.ms": 5,
                     "message.max.bytes": 4 * 1024 * 1024, **conf})


def send_foreign(env, produced: Produced, records: list[tuple], **conf) -> list:
    """Send (key, value, headers) with confluent-kafka and note where each landed."""
    p = foreign_producer(env, **conf)
    landed: list = []

    def done(err, msg):
        assert err is None, err
        landed.append((msg.partition(), msg.offset(), msg.key()))

    for key, value, headers in records:
        p.produce(env.source.topic, key=key, value=value, headers=headers, on_delivery=done)
    assert p.flush(30) == 0
    assert len(landed) == len(records)
    for part, off, _ in landed:
        produced.note(part, off)
    return landed  # (partition, offset, key) in delivery order, not send order


def read_dlq(env, expect: int, timeout: float = 30) -> list:
    c = KafkaConsumer(bootstrap_servers=env.bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=2000, max_partition_fetch_bytes=8 * 1024 * 1024,
                      fetch_max_bytes=16 * 1024 * 1024)
    tp = TopicPartition(env.source.dlq_topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < expect and time.monotonic() < deadline:
        out += list(c)
    c.close()
    return out


def event(user: str, ts_us: int, amount: float = 1.0) -> dict:
    return {"user_id": user, "merchant_id": "m1", "amount": amount, "country": "FR",
            "ts": us_to_iso(ts_us)}


def test_poison_records_are_dead_lettered_and_the_worker_keeps_going(stream_env, redis_client):
    """Tombstones, empty values, null keys, bytes that are not UTF-8, a 1 MB value and headers:
    each is applied or dead-lettered with its reason; the worker never dies on data."""
    env = stream_env
    produced = Produced()
    produce(env, produced, 600, seed=3)
    now = time.time_ns() // 1000
    good = event("u-poison", now - 60_000_000)
    poison = [
        (b"u1", None, None),                                  # tombstone
        (b"u2", b"", None),                                   # empty value
        (None, b"\xff\xfe\x00garbage", None),                 # null key, not UTF-8
        (b"u3", b"x" * (1024 * 1024), [("trace", b"abc")]),   # 1 MB, not JSON, a header
        (b"u4", b"[1, 2]", [("trace", b"\xff")]),             # JSON, not an object
        (None, orjson.dumps(good), [("h", b"v")]),            # valid, null key, headers
    ]
    send_foreign(env, produced, poison, partitioner="murmur2_random")
    produced.valid.append(decode(env.source, orjson.dumps(good)))
    proc = env.start_worker(max_records=300)
    wait_done(env, redis_client, produced)
    assert proc.poll() is None, "the worker died on a record"
    dead = read_dlq(env, len(produced.malformed) + 5)
    reasons = sorted(context(m.headers)["reason"] for m in dead
                     if m.value is None or m.value not in produced.malformed)
    assert reasons == ["empty_value", "invalid_event", "invalid_json", "invalid_json",
                       "null_value"]
    by_reason = {context(m.headers)["reason"]: m for m in dead}
    assert by_reason["null_value"].value is None and by_reason["null_value"].key == b"u1"
    big = [m for m in dead if m.value is not None and len(m.value) == 1024 * 1024]
    assert len(big) == 1 and ("trace", b"abc") in big[0].headers
    check_exactly_once(env, redis_client, produced)
    # a restart does not die on (or re-send) the same records either
    env.stop_all()
    proc = env.start_worker(max_records=300)
    time.sleep(8)
    assert proc.poll() is None
    assert len(read_dlq(env, 10_000, timeout=4)) == len(dead)


def test_future_timestamps_are_dead_lettered_and_erase_no_window(stream_env, redis_client):
    """A day ahead or in year 9999: dead-lettered (future_timestamp); the entity's windows
    at "now" stay what the brute-force reference says."""
    env = stream_env
    produced = Produced()
    now = time.time_ns() // 1000
    on_time = [event("u-clock", now - k * 600_000_000, float(k)) for k in range(1, 4)]
    near = event("u-clock", now + 5_000_000, 7.0)  # 5 s ahead: within max_future (1m)
    ahead = [event("u-clock", now + 24 * HOUR_US, 100.0),
             {**event("u-clock", now, 5.0), "ts": "9999-12-31T23:59:59.999999Z"}]
    recs = [(b"u-clock", orjson.dumps(e), None) for e in [*on_time, near, *ahead]]
    send_foreign(env, produced, recs, partitioner="murmur2_random")
    produced.valid += [decode(env.source, orjson.dumps(e)) for e in [*on_time, near]]
    env.start_worker(max_records=300)
    wait_done(env, redis_client, produced)
    dead = read_dlq(env, 2)
    assert sorted(context(m.headers)["reason"] for m in dead) == ["future_timestamp"] * 2
    # read after the near-future event (reads are exact at or after the newest event)
    time.sleep(max(0.0, (now + 6_000_000 - time.time_ns() // 1000) / 1e6))
    check_exactly_once(env, redis_client, produced)


def store_status(client) -> dict[str, bytes]:
    return {k.decode(): v for k, v in client.hgetall(STORE_KEY).items()}


def test_redis_losing_its_data_is_rebuilt_from_the_log(any_stream_env, any_redis_client):
    """FLUSHALL under a running worker, then a flush while no worker runs: each time the rings
    are rebuilt from the event log and the stream goes on with no gap and no double count.
    On one Redis and on a cluster (FLUSHALL on every primary)."""
    env, redis_client = any_stream_env, any_redis_client
    produced = Produced()
    produce(env, produced, 1200, seed=5)
    env.start_worker(max_records=300)
    wait_done(env, redis_client, produced)
    assert store_readiness(store_status(redis_client))[0]
    redis_client.flushall()
    assert not store_readiness(store_status(redis_client))[0]
    produce(env, produced, 600, seed=6)  # the worker notices at its next write
    wait_done(env, redis_client, produced)
    wait_for(lambda: store_readiness(store_status(redis_client))[0], 30, "the store ready")
    check_exactly_once(env, redis_client, produced)
    env.stop_all()
    redis_client.flushall()  # e.g. a restart without persistence while the worker is down
    env.start_worker(max_records=300)
    produce(env, produced, 300, seed=7)
    wait_done(env, redis_client, produced)
    wait_for(lambda: store_readiness(store_status(redis_client))[0], 30, "the store ready")
    check_exactly_once(env, redis_client, produced)


def test_a_recreated_topic_starts_a_new_epoch_and_loses_nothing(stream_env, redis_client):
    """Offsets restart at 0 when a topic is recreated: without epochs every new event would be
    skipped as a replay by both watermarks."""
    env = stream_env
    produced = Produced()
    produce(env, produced, 900, seed=8)
    env.start_worker(max_records=300)
    wait_done(env, redis_client, produced)
    # stopped first: this broker creates a topic that a running client asks for, with its
    # own partition count, which is not the operator's recreation this test is about
    env.stop_all()
    delete_topics([env.source.topic], env.bootstrap)
    time.sleep(1.0)
    assert ensure_topics([env.source], env.bootstrap) == [env.source.topic]
    produced.end = {}
    produce(env, produced, 500, seed=9)  # fewer than before: offsets stay below the old marks
    env.start_worker(max_records=300)
    wait_done(env, redis_client, produced, timeout=120)
    check_exactly_once(env, redis_client, produced)
    epochs = EventLog(env.home / "offline").scan(env.source).select("_epoch").collect()
    assert set(epochs["_epoch"].unique().to_list()) == {0, 1}


def test_entities_split_across_partitions_by_a_foreign_partitioner(stream_env, redis_client):
    """librdkafka's default partitioner (CRC32) puts many entities on another partition than
    the SDK's (murmur2): with two workers both would write the entity's rings, the last
    writer winning. Misrouted events are forwarded to their home partition instead."""
    env = stream_env
    produced = Produced()
    start = time.time_ns() // 1000 - 2 * HOUR_US
    events = [e for e in transactions(2400, start_us=start, rate=2400 / 7200, users=40,
                                      merchants=20, late_fraction=0.0,
                                      malformed_fraction=0.0, seed=11)
              if isinstance(e, dict)]
    recs = [(key_of(env.source, e).encode(), orjson.dumps(e), None) for e in events]
    env.start_worker(max_records=300)
    env.start_worker(max_records=300)
    time.sleep(8)  # both in the group, so the entities' writes really are split
    landed = send_foreign(env, produced, recs)  # no partitioner given: consistent_random
    produced.valid += [decode(env.source, orjson.dumps(e)) for e in events]
    n = env.source.partitions
    away = [(part, off, h) for part, off, key in landed
            if (h := home_partition(key.decode(), n)) != part]
    assert len(away) > len(events) // 3, "the foreign partitioner should misroute many"
    wait_done(env, redis_client, produced)
    last_forwarded: dict[tuple[int, int], int] = {}
    for part, off, h in away:
        last_forwarded[h, part] = max(last_forwarded.get((h, part), -1), off)

    def forwarded_applied() -> bool:
        for (h, o), off in last_forwarded.items():
            key = f"{offset_key(env.group, env.source.repartition_topic, h)}.{o}"
            if applied_offset(redis_client.get(key)) < off:
                return False
        return True

    wait_for(forwarded_applied, 90, "forwarded events applied at their home partition")
    check_exactly_once(env, redis_client, produced)


def test_a_view_added_later_is_backfilled_from_the_log(stream_env, redis_client):
    """A new view (or a new version of one) starts with the history the log holds, not empty:
    online equals the reference over every event, including those before the view existed."""
    env = stream_env
    full = env.repo_path.read_text()
    cut = full.index("extremes = FeatureView(")
    env.repo_path.write_text(full[:cut])  # first without the view "extremes"
    produced = Produced()
    produce(env, produced, 900, seed=12)
    env.start_worker(max_records=300)
    wait_done(env, redis_client, produced)
    env.stop_all()
    env.repo_path.write_text(full)
    env.start_worker(max_records=300)
    produce(env, produced, 300, seed=13)
    wait_done(env, redis_client, produced)
    wait_for(lambda: store_readiness(store_status(redis_client))[0], 30, "the store ready")
    check_exactly_once(env, redis_client, produced)
