"""tessera audit on a real broker, Redis and event log: offsets accounted for, or a gap."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass

import numpy as np
import orjson
import pyarrow as pa
import pytest
from kafka import KafkaProducer

from features.event_schema import normalize
from features.offline.event_log import EventLog
from features.online.layout import offset_key
from features.settings import Settings
from streams.audit import Gap, audit, gaps_of, parse_watermark
from streams.topics import delete_topics, ensure_topics
from tessera.cli_streams import load_repo
from tests.streams.conftest import REPO_TEMPLATE

N = 30  # records per partition
BAD = {0: {3, 17}, 1: {5, 20, 29}}  # offsets that are dead letters (1/29: the old JSON format)


@dataclass
class Topic:
    repo_path: object
    source: object
    valid: dict  # partition -> [(offset, normalised event)]
    bootstrap: str


def _dead_letter(topic: str, partition: int, offset: int, raw: bytes | None, epoch: int = 0,
                 legacy: bool = False) -> dict:
    if legacy:
        return {"value": orjson.dumps({"error": "bad", "field": None, "topic": topic,
                                       "partition": partition, "offset": offset,
                                       "value": base64.b64encode(raw or b"").decode()})}
    headers = {"tessera.reason": "invalid_json", "tessera.error": "not JSON",
               "tessera.field": "", "tessera.topic": topic, "tessera.partition": str(partition),
               "tessera.offset": str(offset), "tessera.epoch": str(epoch)}
    return {"value": raw, "headers": [(k, v.encode()) for k, v in headers.items()]}


@pytest.fixture(scope="module")
def topic(kafka_bootstrap, tmp_path_factory):
    name = f"t{uuid.uuid4().hex[:10]}"
    d = tmp_path_factory.mktemp("audit")
    repo_path = d / "repo.py"
    repo_path.write_text(REPO_TEMPLATE.format(topic=name, partitions=2))
    source = load_repo(repo_path).sources["txn"]
    ensure_topics([source], kafka_bootstrap)
    prod = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    valid: dict[int, list] = {0: [], 1: []}
    dead = []
    try:
        for p in (0, 1):
            for i in range(N):
                if i in BAD[p]:
                    raw = None if i == 17 else b"not json"
                    md = prod.send(name, value=raw, key=b"k", partition=p).get(30)
                    dead.append(_dead_letter(name, p, md.offset, raw, legacy=(p, i) == (1, 29)))
                    continue
                ev = {"user_id": f"u{i % 4}", "merchant_id": "m1", "amount": float(i),
                      "country": "FR", "ts": 1_772_323_200_000 + i * 1000}
                md = prod.send(name, value=orjson.dumps(ev), key=b"k", partition=p).get(30)
                valid[p].append((md.offset, normalize(source, ev)))
        for dl in dead:
            prod.send(source.dlq_topic, key=b"k", **dl).get(30)
        prod.flush()
    finally:
        prod.close()
    # the offsets the broker gave us are exactly 0..N-1 per partition
    assert sorted([o for o, _ in valid[0]] + list(BAD[0])) == list(range(N))
    yield Topic(repo_path, source, valid, kafka_bootstrap)
    delete_topics([name, source.dlq_topic], kafka_bootstrap)


def _log(tmp_path, topic: Topic, skip: dict[int, range] | None = None) -> EventLog:
    """The event log a worker would have written, minus the offsets in ``skip``."""
    log = EventLog(Settings(tmp_path).offline_dir)
    src = topic.source
    for p, events in topic.valid.items():
        keep = [(o, e) for o, e in events if o not in (skip or {}).get(p, ())]
        log.append(src, _table(src, keep), topic=src.topic, partition=p)
    return log


def _table(src, rows) -> pa.Table:
    cols = {k: [e[k] for _, e in rows] for k in src.schema}
    cols["ts"] = pa.array(cols["ts"], pa.timestamp("us", tz="UTC"))
    cols["_offset"] = pa.array([o for o, _ in rows], pa.int64())
    cols["_ingest_ts"] = pa.array([0] * len(rows), pa.timestamp("us", tz="UTC"))
    return pa.table(cols)


def _cli(topic: Topic, home, redis_url: str, group: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KAFKA_BOOTSTRAP": topic.bootstrap, "REDIS_URL": redis_url,
           "TESSERA_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-c", "from tessera.cli import main; main()", "audit", "--source",
         "txn", "--group", group, "--repo", str(topic.repo_path), "--idle", "1"],
        env=env, capture_output=True, text=True, timeout=120)


def test_parse_watermark_and_gaps():
    assert parse_watermark(None) is None
    assert parse_watermark(b"41") == (41, 0, None)
    assert parse_watermark("41:2:9f3a") == (41, 2, "9f3a")
    present = np.array([0, 1, 2, 5, 9])
    assert gaps_of(3, 0, 11, present) == [Gap(3, 3, 4), Gap(3, 6, 8), Gap(3, 10, 11)]
    assert gaps_of(3, 0, 2, present) == []
    assert gaps_of(3, 4, 4, present) == [Gap(3, 4, 4)]


def test_complete_log_and_dead_letters_pass(topic, tmp_path, redis_client, redis_url):
    log = _log(tmp_path, topic)
    group = "g-complete"
    redis_client.set(offset_key(group, topic.source.topic, 0), b"29")  # the old format
    redis_client.set(offset_key(group, topic.source.topic, 1), b"29:0:1234")
    rep = audit(topic.source, bootstrap=topic.bootstrap, event_log=log,
                redis_client=redis_client, group=group, idle_s=1.0)
    assert rep.ok, rep.gaps
    for p in rep.partitions:
        bad = len(BAD[p.partition])
        assert (p.expected, p.in_log + p.in_dlq, p.in_dlq, p.in_both) == (N, N, bad, 0)
    out = _cli(topic, tmp_path, redis_url, group)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no gaps" in out.stdout


def test_withheld_offsets_are_exactly_the_gap(topic, tmp_path, redis_client, redis_url):
    log = _log(tmp_path, topic, skip={1: range(10, 15)})  # a range the log never got
    group = "g-gap"
    rep = audit(topic.source, bootstrap=topic.bootstrap, event_log=log,
                redis_client=redis_client, group=group, idle_s=1.0)
    assert rep.gaps == [Gap(1, 10, 14)] and rep.missing == 5
    # the worker's Redis watermark is ahead of what the topic and log hold: that is a gap too
    redis_client.set(offset_key(group, topic.source.topic, 0), b"33:0:77")
    rep = audit(topic.source, bootstrap=topic.bootstrap, event_log=log,
                redis_client=redis_client, group=group, idle_s=1.0)
    assert rep.gaps == [Gap(0, 30, 33), Gap(1, 10, 14)]
    out = _cli(topic, tmp_path, redis_url, group)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = [ln.split() for ln in out.stdout.split("gaps (", 1)[1].splitlines()[1:]]
    assert ["0", "30", "33", "4"] in lines and ["1", "10", "14", "5"] in lines
    assert "9 offsets in 2 gaps are lost" in out.stderr


def test_only_the_current_epoch_counts(topic, tmp_path, redis_client):
    log = _log(tmp_path, topic)
    src, group = topic.source, "g-epoch"
    assert log.begin_epoch(src, src.topic, 0, 1)  # the topic was recreated
    redis_client.set(offset_key(group, src.topic, 0), b"29:0:1")  # old epoch: ignored
    rep = audit(src, bootstrap=topic.bootstrap, event_log=log, redis_client=redis_client,
                group=group, idle_s=1.0)
    assert rep.ok and rep.partitions[0].epoch == 1 and rep.partitions[0].expected == 0
    # the worker applied offsets 0..4 of epoch 1: epoch 0's rows and dead letters don't count
    redis_client.set(offset_key(group, src.topic, 0), b"4:1:1")
    rep = audit(src, bootstrap=topic.bootstrap, event_log=log, redis_client=redis_client,
                group=group, idle_s=1.0)
    assert rep.gaps == [Gap(0, 0, 4)]
    log.append(src, _table(src, [(o, e) for o, e in topic.valid[0] if o < 3]),
               topic=src.topic, partition=0)
    prod = KafkaProducer(bootstrap_servers=topic.bootstrap, acks="all")
    prod.send(src.dlq_topic, key=b"k", **_dead_letter(src.topic, 0, 3, b"x", epoch=1)).get(30)
    prod.close()
    rep = audit(src, bootstrap=topic.bootstrap, event_log=log, redis_client=redis_client,
                group=group, idle_s=1.0)
    assert rep.gaps == [Gap(0, 4, 4)]


def test_watermarks_on_a_redis_cluster(topic, tmp_path, redis_cluster_url):
    """The partitions' watermark keys live in different slots of a cluster (where ``MGET``
    of them is refused): the audit reads them one round trip per node, in the library and in
    ``tessera audit`` with a ``redis+cluster://`` URL."""
    from redis.crc import key_slot

    from features.online.cluster import connect, primaries

    client = connect(redis_cluster_url)
    for node in primaries(client):
        node.flushall()
    group = "g-cluster"
    keys = [offset_key(group, topic.source.topic, p) for p in (0, 1)]
    assert key_slot(keys[0].encode()) != key_slot(keys[1].encode())
    log = _log(tmp_path, topic, skip={1: range(10, 13)})
    client.set(keys[0], b"33:0:77")
    client.set(keys[1], b"29:0:5")
    try:
        rep = audit(topic.source, bootstrap=topic.bootstrap, event_log=log,
                    redis_client=client, group=group, idle_s=1.0)
        assert rep.gaps == [Gap(0, 30, 33), Gap(1, 10, 12)]
        out = _cli(topic, tmp_path, redis_cluster_url, group)
        assert out.returncode == 1, out.stdout + out.stderr
        assert "7 offsets in 2 gaps are lost" in out.stderr
    finally:
        client.close()
