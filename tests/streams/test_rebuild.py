"""Rebuilding rings from the event log: the bytes a streaming worker would hold, values equal to
a brute-force reference when read back through the online store, and a backfill that writes
only its own view's fields."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from features.event_columns import EventColumns
from features.offline.event_log import EventLog
from features.online.backend import open_backend
from features.online.layout import APPLIED_FIELD, STORE_KEY, ViewLayout, entity_key
from features.online.read import OnlineStore
from features.semantics.aggregations import get_aggregation
from features.semantics.windows import MINUTE
from streams.worker import rebuild as rb
from streams.worker.online import TTL_REFRESH_S, OnlineWriter
from streams.worker.tiles import RingCache, fold_batch, plan_views
from tessera.cli_streams import load_repo
from tests.reference import brute_force, close
from tests.streams.conftest import REPO_TEMPLATE, VIEWS

HOUR = 60 * MINUTE
DAY = 24 * HOUR
PARTITIONS = 3


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "repo.py"
    path.write_text(REPO_TEMPLATE.format(topic="txn-topic", partitions=PARTITIONS))
    return path


def partition_of(user: str) -> int:
    return int(user[1:]) % PARTITIONS


def make_events(rng: random.Random, now: int, n: int = 600, users: int = 9) -> list[dict]:
    """Events in arrival (log) order: out of order by up to 25 min, a few late by days (beyond
    every ring's horizon), ties in event time, one busy entity (many events per tile)."""
    evs = []
    for _ in range(n):
        u = "u0" if rng.random() < 0.3 else f"u{rng.randrange(users)}"
        ts = now - rng.randrange(0, 3 * HOUR)
        evs.append({"user_id": u, "merchant_id": f"m{rng.randrange(5)}",
                    "amount": round(rng.uniform(-20, 400), 2), "country": "FR", "ts": ts})
    evs.sort(key=lambda e: e["ts"] + rng.randrange(0, 25 * MINUTE))  # arrival order
    for i in rng.sample(range(len(evs)), 12):  # late: days old, arriving now
        evs[i] = {**evs[i], "ts": now - 3 * DAY - rng.randrange(0, HOUR)}
    for i in rng.sample(range(1, len(evs)), 15):  # the same event time as an earlier event
        j = rng.randrange(i)
        evs[i] = {**evs[i], "user_id": evs[j]["user_id"], "ts": evs[j]["ts"]}
    return evs


def by_partition(events: list[dict]) -> dict[int, list[tuple[int, dict]]]:
    """Kafka offsets: per partition, in arrival order."""
    out: dict[int, list[tuple[int, dict]]] = {p: [] for p in range(PARTITIONS)}
    for e in events:
        part = out[partition_of(e["user_id"])]
        part.append((len(part), e))
    return out


def write_log(log: EventLog, source, parts: dict[int, list[tuple[int, dict]]]) -> None:
    for p, rows in parts.items():
        if not rows:
            continue
        evs = [e for _, e in rows]
        log.append(source, pa.table({
            "user_id": [e["user_id"] for e in evs],
            "merchant_id": [e["merchant_id"] for e in evs],
            "amount": [e["amount"] for e in evs],
            "country": [e["country"] for e in evs],
            "ts": pa.array([e["ts"] for e in evs], pa.timestamp("us", tz="UTC")),
            "_offset": [o for o, _ in rows],
            "_ingest_ts": pa.array([e["ts"] for e in evs], pa.timestamp("us", tz="UTC")),
        }), topic=source.topic, partition=p)


def batches(rng: random.Random, parts: dict[int, list[tuple[int, dict]]]):
    """Worker-like batches: each holds the next few offsets of some partitions, in order."""
    pos = dict.fromkeys(parts, 0)
    while any(pos[p] < len(parts[p]) for p in parts):
        batch = {}
        for p in parts:
            if pos[p] < len(parts[p]) and rng.random() < 0.7:
                k = rng.randrange(1, 40)
                batch[p] = parts[p][pos[p]:pos[p] + k]
                pos[p] += len(batch[p])
        if batch:
            yield batch


def stream_fold(source, views, parts, rng, horizon_start: int) -> dict[str, list[bytes]]:
    """What the worker's kernel holds after streaming ``parts`` (events at or after
    ``horizon_start``, as its late rule does), per key and plan."""
    plans = plan_views(views)
    cache = RingCache(plans, capacity=2)
    for batch in batches(rng, parts):
        rows_in = [(o, e) for p in sorted(batch) for o, e in batch[p]
                   if e["ts"] >= horizon_start]
        if not rows_in:
            continue
        keys = [entity_key(source.entity, (e["user_id"],)) for _, e in rows_in]
        new = sorted(set(keys) - set(cache.rows))
        cache.add(new, [0] * len(new), [[None] * len(plans) for _ in new])
        rows = np.array([cache.rows[k] for k in keys], dtype=np.int64)
        ts = np.array([e["ts"] for _, e in rows_in], dtype=np.int64)
        seq = np.array([o for o, _ in rows_in], dtype=np.int64)
        cols = {"amount": np.array([e["amount"] for _, e in rows_in], dtype=np.float64)}
        for plan, arr in zip(plans, cache.arrays, strict=True):
            fold_batch(arr, plan, rows, ts, seq, cols)
    return {k: [arr[r].tobytes() for arr in cache.arrays] for k, r in cache.rows.items()}


def rebuilt(chunks) -> dict[str, list[bytes]]:
    out = {}
    for ch in chunks:
        for i, k in enumerate(ch.keys):
            assert ch.present[i].all()
            out[k] = [r[i].tobytes() for r in ch.rings]
    return out


@pytest.mark.parametrize("seed", range(4))
def test_fold_stddev_equals_the_kernels_event_by_event_loop(seed):
    rng = np.random.default_rng(seed)
    g, width = 40, 7
    base = rng.normal(size=(g, width)) * 10
    base[:, 1] = rng.integers(0, 4, g)  # n: some tiles empty, some not
    base[base[:, 1] == 0, 2:4] = 0.0
    inv = rng.integers(0, g, 500)
    inv[:200] = 3  # one tile with many events
    v = np.round(rng.normal(size=500) * 100, 2)
    want, got = base.copy(), base.copy()
    agg = get_aggregation("stddev")  # the kernel fold_batch (and so the rebuild) folds with
    for g, x in zip(inv.tolist(), v.tolist(), strict=True):
        want[g, 1:4] = agg.merge(tuple(want[g, 1:4].tolist()), agg.prepare(x, 0, 0))
    zero = np.zeros(len(inv), dtype=np.int64)
    agg.fold_events(got[:, 1:4], inv, zero, zero, v)
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("seed", range(4))
def test_rings_from_log_equal_the_streaming_fold_byte_for_byte(repo, tmp_path, seed):
    rng = random.Random(seed)
    fr = load_repo(repo)
    source, views = fr.sources["txn"], [fr.views[v] for v in VIEWS]
    now = 1_800_000_000_000_000 + rng.randrange(DAY)
    events = make_events(rng, now)
    parts = by_partition(events)
    log = EventLog(tmp_path / "log")
    write_log(log, source, parts)
    at = now + 5 * MINUTE
    start = at - rb.horizon_us(views)
    want = stream_fold(source, views, parts, rng, start)
    got = rebuilt(rb.rings_from_log(source, views, log, now_us=at, chunk_entities=2))
    assert sorted(got) == sorted(want) and len(got) >= 5
    for k in want:
        assert got[k] == want[k], k
    # the late events are in the log but not in any ring
    assert sum(e["ts"] < start for e in events) >= 12

    # watermarks: only offsets at or below them; a partition without one contributes nothing
    upto = {0: len(parts[0]) // 2, 1: len(parts[1]) // 3}
    cut = {p: [(o, e) for o, e in parts[p] if p in upto and o <= upto[p]] for p in parts}
    want = stream_fold(source, views, cut, rng, start)
    got = rebuilt(rb.rings_from_log(source, views, log, now_us=at, upto=upto))
    assert got == want and all(partition_of(k.rsplit(":", 1)[1]) in upto for k in got)

    # an entity predicate (the worker's "my partitions")
    mine = pl.col("_partition").is_in([2])
    got = rebuilt(rb.rings_from_log(source, views, log, now_us=at, entity_filter=mine))
    want = stream_fold(source, views, {2: parts[2]}, rng, start)
    assert got == want and got


def test_watermarks_of_the_newest_epoch_keep_older_epochs_whole():
    df = pl.DataFrame({"_partition": [0, 0, 0, 0, 1, 1], "_offset": [5, 9, 1, 4, 2, 3],
                       "_epoch": [0, 0, 1, 1, 1, 2]},
                      schema={"_partition": pl.Int32, "_offset": pl.Int64, "_epoch": pl.Int64})
    got = rb._at_or_below(df, {0: 2, 1: 2}, epoch=1)
    assert sorted(zip(got["_partition"], got["_epoch"], got["_offset"], strict=True)) == [
        (0, 0, 5), (0, 0, 9), (0, 1, 1), (1, 1, 2)]
    # default: the newest epoch read (2); partition 0 has no mark, so nothing of it
    assert rb._at_or_below(df, {1: 9}, epoch=None)["_offset"].to_list() == [2, 3]
    assert rb._at_or_below(df, {1: 2}, epoch=None)["_offset"].to_list() == [2]
    # per partition: partition 0's newest epoch is 1, partition 1's is 2
    got = rb._at_or_below(df, {0: 2, 1: 2}, epoch=None)
    assert sorted(zip(got["_partition"], got["_epoch"], got["_offset"], strict=True)) == [
        (0, 0, 5), (0, 0, 9), (0, 1, 1), (1, 1, 2)]


def read_all(client, repo_obj, view_names, users, t):
    refs = [f"{v}:{f}" for v in view_names for f in repo_obj.views[v].feature_names]
    store = OnlineStore(client, repo_obj)
    res = store.get_features(refs, [{"user_id": u} for u in users], at_us=t)
    return refs, res


def check_reference(client, repo_obj, view_names, events, users, times):
    """Every feature of every entity read online equals the brute force over ``events``."""
    compared = 0
    for t in times:
        refs, res = read_all(client, repo_obj, view_names, users, t)
        for u, row, missing in zip(users, res.values, res.missing, strict=True):
            assert not any(missing), u
            mine = [e for e in events if e["user_id"] == u]
            seqs = {}
            for p, rows in by_partition(events).items():
                seqs.update({id(e): (p, o) for o, e in rows})
            for ref, got in zip(refs, row, strict=True):
                vname, fname = ref.split(":")
                f = repo_obj.views[vname].feature(fname)
                evs = [(e["ts"], seqs[id(e)][1], e["amount"] if f.field else 1.0) for e in mine]
                want = brute_force(evs, f.fn, t, f.window, f.hop)
                assert close(got, want), (u, ref, t, got, want)
                compared += 1
    return compared


@pytest.mark.integration
def test_rebuild_into_redis_reads_back_as_the_reference(repo, tmp_path, redis_client):
    rng = random.Random(11)
    fr = load_repo(repo)
    source, views = fr.sources["txn"], [fr.views[v] for v in VIEWS]
    now = time.time_ns() // 1000
    events = make_events(rng, now)
    log = EventLog(tmp_path / "log")
    write_log(log, source, by_partition(events))
    seen = []
    report = rb.rebuild(redis_client, source, views, log, now_us=now, chunk_entities=3,
                        progress=lambda done, total: seen.append((done, total)))
    users = sorted({e["user_id"] for e in events})
    assert report.entities == report.keys_written == len(users)
    assert seen[-1] == (len(users), len(users)) and len(seen) >= 3
    newest = max(e["ts"] for e in events)
    compared = check_reference(redis_client, fr, list(VIEWS), events, users,
                               [newest + 1, newest + 7 * MINUTE, newest + 70 * MINUTE])
    assert compared == 3 * len(users) * sum(len(v.features) for v in views)
    ttl = redis_client.ttl(entity_key(source.entity, (users[0],)))
    assert rb.worker_ttl_s(views) - 60 <= ttl <= rb.worker_ttl_s(views)
    # idempotent: a second rebuild writes the same bytes
    before = {u: redis_client.hgetall(entity_key(source.entity, (u,))) for u in users}
    rb.rebuild(redis_client, source, views, log, now_us=now)
    assert before == {u: redis_client.hgetall(entity_key(source.entity, (u,))) for u in users}



def apply_worker(source, views, client, group, parts, rng, upto=None):
    """Stream ``parts`` through the real ``OnlineWriter`` (the worker's online half)."""
    writer = OnlineWriter(source, views, open_backend(client), group, HOUR)
    for batch in batches(rng, parts):
        cols = {}
        for p, rows in batch.items():
            rows = [(o, e) for o, e in rows if upto is None or o <= upto[p]]
            if rows:
                # (events, last offset, its fingerprint, last Kafka offset read)
                cols[p] = (EventColumns.from_events(source, rows), rows[-1][0], 0, rows[-1][0])
        writer.apply(cols)
    writer.commit()


@pytest.mark.integration
def test_rebuilt_redis_bytes_equal_what_the_online_writer_wrote(repo, tmp_path, redis_client):
    rng = random.Random(5)
    fr = load_repo(repo)
    source, views = fr.sources["txn"], [fr.views[v] for v in VIEWS]
    now = time.time_ns() // 1000
    events = make_events(rng, now)
    parts = by_partition(events)
    log = EventLog(tmp_path / "log")
    write_log(log, source, parts)
    apply_worker(source, views, redis_client, "g1", parts, rng)
    writer = OnlineWriter(source, views, open_backend(redis_client), "g1", HOUR)
    assert rb.horizon_us(views, HOUR) == writer.horizon_us  # the same late rule
    assert rb.worker_ttl_s(views) == writer.ttl_s + TTL_REFRESH_S
    keys = sorted(k for k in redis_client.keys(f"tessera:{source.entity.name}:*"))
    streamed = {k: redis_client.hgetall(k) for k in keys}
    for v in streamed.values():  # the worker's fence, not a ring (the log has no offsets to it)
        assert v.pop(APPLIED_FIELD.encode())
    assert len(keys) >= 5 and all(len(v) == len(plan_views(views)) for v in streamed.values())
    redis_client.flushdb()  # Redis lost its data
    rb.rebuild(redis_client, source, views, log, now_us=time.time_ns() // 1000)
    assert sorted(redis_client.keys(f"tessera:{source.entity.name}:*")) == keys
    for k in keys:
        assert redis_client.hgetall(k) == streamed[k], k


@pytest.mark.integration
def test_backfill_of_a_view_added_later(repo, tmp_path, redis_client, monkeypatch):
    rng = random.Random(3)
    fr = load_repo(repo)
    source = fr.sources["txn"]
    old_views = [fr.views["counts"], fr.views["spend"]]
    now = time.time_ns() // 1000
    events = make_events(rng, now)
    parts = by_partition(events)
    home = tmp_path / "home"
    log = EventLog(home / "offline")
    write_log(log, source, parts)
    # the worker ran with the first views only, and applied a prefix of each partition
    upto = {p: len(rows) * 3 // 4 for p, rows in parts.items()}
    apply_worker(source, old_views, redis_client, "grp", parts, rng, upto=upto)
    users = sorted({e["user_id"] for o_e in parts.values() for o, e in o_e
                    if o <= upto[partition_of(e["user_id"])]})
    keys = [entity_key(source.entity, (u,)) for u in users]
    old_fields = [f for v in old_views for f in ViewLayout(v).fields]
    # sentinels in the old views' fields: a backfill that rewrote them would replace them
    for k in keys:
        redis_client.hset(k, mapping={f: b"sentinel:" + f.encode() for f in old_fields})
    seen_flags = []

    def progress(done, total):
        seen_flags.append(redis_client.hgetall(STORE_KEY))

    new = fr.views["extremes"]
    report = rb.backfill(redis_client, new, list(fr.views.values()), log, group="grp",
                         progress=progress)
    assert report.upto == upto and not report.warnings
    flag = f"rebuilding:backfill:extremes@{new.version}".encode()
    assert seen_flags and all(flag in f for f in seen_flags)
    assert json.loads(seen_flags[0][flag])["reason"] == "backfill"
    assert flag not in redis_client.hgetall(STORE_KEY)
    for k in keys:
        h = redis_client.hgetall(k)
        assert {f: h[f.encode()] for f in old_fields} == {
            f: b"sentinel:" + f.encode() for f in old_fields}
        assert all(f.encode() in h for f in ViewLayout(new).fields)
    applied = [e for p, rows in parts.items() for o, e in rows if o <= upto[p]]
    newest = max(e["ts"] for e in applied)
    check_reference(redis_client, fr, ["extremes"], applied, users,
                    [newest + 1, newest + 30 * MINUTE])

    # the command: same rings again (idempotent), flag removed, exit 0
    import typer

    from tessera import cli_backfill

    app = typer.Typer()
    cli_backfill.register(app)
    before = {k: redis_client.hgetall(k) for k in keys}
    monkeypatch.setenv("REDIS_URL", redis_client.connection_pool.connection_kwargs.get(
        "url", "") or _url(redis_client))
    monkeypatch.setenv("TESSERA_HOME", str(home))
    out = CliRunner().invoke(app, ["--view", "extremes", "--repo", str(repo), "--group", "grp"])
    assert out.exit_code == 0, out.output
    assert f"{len(users)} entities" in out.output
    assert {k: redis_client.hgetall(k) for k in keys} == before
    assert not [f for f in redis_client.hgetall(STORE_KEY) if f.startswith(b"rebuilding:")]


def _url(client) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"
