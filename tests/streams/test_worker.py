"""The worker against a real broker, real Redis and real worker processes.

Exactly once in effect is checked three ways after each scenario: every online feature of
every entity equals (1) a brute-force computation over the events we produced and (2) the skew
check's recomputation from the offline log; and (3) the log holds each offset exactly once.
"""

from __future__ import annotations

import random
import threading
import time

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from features.definitions import FeatureView
from features.errors import SchemaError
from features.event_schema import decode
from features.offline.event_log import EventLog
from features.online.layout import applied_offset, offset_key
from features.online.read import OnlineStore
from features.skew import skew_check
from streams.generate import transactions
from streams.producer import Publisher
from streams.worker.dlq import context
from tests.reference import brute_force, close
from tests.streams.conftest import VIEWS, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

HOUR_US = 3_600_000_000


class Produced:
    """Everything sent, to know when the worker is done and what the answer must be."""

    def __init__(self) -> None:
        self.valid: list[dict] = []  # normalised, in send order
        self.malformed: list[bytes] = []
        self.end: dict[int, int] = {}

    def note(self, partition: int, offset: int) -> None:
        if offset > self.end.get(partition, -1):
            self.end[partition] = offset


def produce(env, produced: Produced, n: int, seed: int, span_h: float = 3.0) -> None:
    start = time.time_ns() // 1000 - int(span_h * HOUR_US)
    events = list(transactions(n, start_us=start, rate=n / (span_h * 3600), users=150,
                               merchants=50, late_fraction=0.02, malformed_fraction=0.02,
                               seed=seed))
    with Publisher(env.source, env.bootstrap) as pub:
        futs = [pub.send_raw(e) for e in events if isinstance(e, bytes)]
        good = [e for e in events if isinstance(e, dict)]
        report = pub.publish(good)
        assert report.sent == len(good) and not report.rejected and not report.failed
        for p, o in report.last_offsets.items():
            produced.note(p, o)
        for f in futs:
            md = f.get(timeout=10)
            produced.note(md.partition, md.offset)
    produced.valid += [decode(env.source, orjson.dumps(e)) for e in good]
    produced.malformed += [e for e in events if isinstance(e, bytes)]


def watermarks(env, client) -> dict[int, int]:
    out = {}
    for p in range(env.source.partitions):
        v = client.get(offset_key(env.group, env.source.topic, p))
        out[p] = applied_offset(v)
    return out


def wait_done(env, client, produced: Produced, timeout: float = 90) -> None:
    """Redis holds every offset, and the event log (flushed about once a second) at least as
    many rows as valid events were sent (more would be duplicates, caught later)."""
    wait_for(lambda: all(watermarks(env, client).get(p, -1) >= o
                         for p, o in produced.end.items()), timeout, "worker to catch up")
    log = EventLog(env.home / "offline")
    wait_for(lambda: log.scan(env.source).select("_offset").collect().height
             >= len(produced.valid), 30, "the offline log to catch up", every=0.3)


def check_exactly_once(env, client, produced: Produced) -> None:
    repo = env.repo
    t = time.time_ns() // 1000
    by_user: dict[str, list[tuple[int, int, float]]] = {}
    for seq, ev in enumerate(produced.valid):
        by_user.setdefault(ev["user_id"], []).append((ev["ts"], seq, ev["amount"]))
    users = sorted(by_user)
    store = OnlineStore(client, repo)
    bad = []
    for vname in VIEWS:
        view = repo.view(vname)
        assert isinstance(view, FeatureView)
        refs = [f"{vname}:{f.name}" for f in view.features]
        res = store.get_features(refs, [{"user_id": u} for u in users], at_us=t)
        for u, values in zip(users, res.values, strict=True):
            for f, got in zip(view.features, values, strict=True):
                events = [(ts, s, a if f.field else 1.0) for ts, s, a in by_user[u]]
                want = brute_force(events, f.fn, t, f.window, f.hop)
                if not close(got, want):
                    bad.append((u, vname, f.name, got, want))
        report = skew_check(repo, vname, client, EventLog(env.home / "offline"), at=t,
                            sample=None)
        assert report.entities > 0 and report.mismatches == [], report.mismatches[:5]
    assert bad == [], bad[:10]
    log = EventLog(env.home / "offline").scan(env.source).collect()
    assert log.height == len(produced.valid)
    assert log.select(["_epoch", "_partition", "_offset"]).n_unique() == log.height


def test_dead_letters_hold_reason_and_original_bytes(stream_env, redis_client):
    env = stream_env
    produced = Produced()
    produce(env, produced, 1500, seed=1)
    env.start_worker(max_records=500)
    wait_done(env, redis_client, produced)
    c = KafkaConsumer(bootstrap_servers=env.bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=3000)
    tp = TopicPartition(env.source.dlq_topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    dead = list(c)
    c.close()
    assert len(dead) == len(produced.malformed) > 0
    assert sorted(m.value for m in dead) == sorted(produced.malformed)
    for m in dead:
        ctx = context(m.headers)
        with pytest.raises(SchemaError) as e:
            decode(env.source, m.value)
        assert ctx["error"] == str(e.value) and ctx["field"] == (e.value.field or "")
        assert ctx["reason"] == e.value.reason
        assert ctx["topic"] == env.source.topic and int(ctx["offset"]) >= 0
    check_exactly_once(env, redis_client, produced)
    # the worker process is a faust-streaming app (its data folder is the faust app's)
    assert (env.home / "faust" / "v1" / "tables").is_dir()


@pytest.mark.timeout(480)  # generous: group joins after each kill take 5-10 s on a loaded machine
def test_kill_9_mid_stream_loses_and_double_counts_nothing(any_stream_env, any_redis_client):
    env, redis_client = any_stream_env, any_redis_client  # one Redis, then a cluster
    produced = Produced()
    # 12k events at 60 per poll outlast the two kill-restart rounds (each waits for progress
    # first) on both topologies; more only lengthens the catch-up after the last restart
    produce(env, produced, 12000, seed=2)
    rng = random.Random(3)
    # small polls, a Redis write every 20 ms: kills land while folding, writing and flushing
    proc = env.start_worker(max_records=60, commit_interval=0.02)
    kills = 0
    for _ in range(2):
        before = sum(watermarks(env, redis_client).values())
        wait_for(lambda b=before: sum(watermarks(env, redis_client).values()) > b, 60,
                 "progress after (re)start", every=0.02)
        time.sleep(rng.uniform(0, 0.3))
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
            kills += 1
        done = all(watermarks(env, redis_client).get(p, -1) >= o for p, o in produced.end.items())
        proc = env.start_worker(max_records=60, commit_interval=0.02)
        if done:
            break
    assert kills >= 2
    wait_done(env, redis_client, produced)
    check_exactly_once(env, redis_client, produced)


def test_workers_joining_and_leaving_share_partitions_exactly_once(any_stream_env,
                                                                   any_redis_client):
    env, redis_client = any_stream_env, any_redis_client  # one Redis, then a cluster
    produced = Produced()
    produce(env, produced, 1500, seed=4)
    a = env.start_worker(max_records=100)
    wait_done(env, redis_client, produced)
    stop = threading.Event()

    def keep_producing() -> None:
        seed = 10
        while not stop.is_set():
            produce(env, produced, 300, seed=seed, span_h=0.5)
            seed += 1
            stop.wait(0.3)

    feeder = threading.Thread(target=keep_producing, daemon=True)
    feeder.start()
    b = env.start_worker(max_records=100)  # joins: partitions are split between a and b
    logs = env.home / "worker-1.log"
    time.sleep(12)
    a.kill()  # a dies without leaving; its partitions move to b after the session timeout
    a.wait(10)
    c = env.start_worker(max_records=100)  # another member joins mid-stream
    time.sleep(10)
    stop.set()
    feeder.join(30)
    wait_done(env, redis_client, produced, timeout=120)
    assert b.poll() is None and c.poll() is None, logs.read_text()[-2000:]
    check_exactly_once(env, redis_client, produced)
