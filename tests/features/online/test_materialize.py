"""Materialized batch views in a real Redis: the same values as the training set (TTL applied
at read time), in the entity's hash beside its rings, idempotent reruns and incremental runs."""

from __future__ import annotations

import time

import numpy as np
import polars as pl
import pytest

from examples.feature_repo import transactions, user, user_spend
from features.definitions import BatchFeatureView, FeatureRepo
from features.event_columns import EventColumns
from features.event_schema import normalize
from features.offline.event_log import EventLog
from features.offline.training_set import training_set
from features.online.backend import open_backend
from features.online.batch import BatchReadError, feature_field
from features.online.materialize import last_materialized, materialize_view
from features.online.read import OnlineStore
from features.settings import Settings
from streams.worker.offline_sink import to_table
from streams.worker.online import OnlineWriter

pytestmark = pytest.mark.integration

DAY = 86_400_000_000
profile = BatchFeatureView(
    "profile", entity=user, path="profile.parquet", timestamp_field="ts",
    schema={"age_days": "int", "limit": "float", "vip": "bool", "tier": "string"}, ttl="10d",
)
REFS = [f"profile:{n}" for n in profile.feature_names]


def _write(home, rows: list[tuple]) -> None:
    (home / "batch").mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema={"user_id": pl.String, "ts": pl.Int64, "age_days": pl.Int64,
                               "limit": pl.Float64, "vip": pl.Boolean, "tier": pl.String},
                 orient="row").with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC"))
                                            ).write_parquet(home / "batch" / "profile.parquet")


def _offline(home, repo, users, t):
    spine = pl.DataFrame({"user_id": users, "ts": [t] * len(users)}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")))
    df = training_set(spine, REFS, repo=repo, settings=Settings(home),
                      event_log=EventLog(home / "offline"))
    return [[df[f"profile__{n}"][i] for n in profile.feature_names] for i in range(len(users))]


def _dump(client) -> dict:
    from features.online.cluster import primaries

    keys = sorted({k for node in primaries(client) for k in node.keys("tessera:user:*")})
    return {k.decode(): client.hgetall(k) for k in keys}


def test_reads_equal_the_training_set_and_expire_at_read_time(redis_client, tmp_path):
    now = time.time_ns() // 1000
    end = now - 2 * DAY
    rng = np.random.default_rng(3)
    rows = []
    for u in range(40):
        for d in range(int(rng.integers(1, 6))):
            rows.append((f"u{u}", end - int(rng.integers(0, 14 * DAY)), int(rng.integers(1, 900)),
                         None if rng.random() < 0.2 else float(rng.random() * 1000),
                         bool(rng.random() < 0.5), f"t{d}"))
    rows.append(("u0", end + DAY, 1, 1.0, True, "future"))  # after end: not materialized
    rows.append(("u1", end - 3 * DAY, 5, 5.0, False, "tie-first"))
    rows.append(("u1", end - 3 * DAY, 6, 6.0, True, "tie-last"))  # a tie: the later row wins
    _write(tmp_path, rows)
    repo = FeatureRepo.of([profile])
    report = materialize_view(redis_client, profile, tmp_path, end_us=end)
    assert report.entities > 30 and last_materialized(redis_client, profile) == end
    store = OnlineStore(redis_client, repo)
    users = [f"u{i}" for i in range(40)] + ["nobody"]
    checked = 0
    for t in (end, end + 1, end + DAY // 2, end + 3 * DAY, end + 9 * DAY):
        online = store.get_features(REFS, [{"user_id": u} for u in users], at_us=t)
        expected = _offline(tmp_path, repo, users, t)
        if t >= end + DAY:  # u0's newer row is in the file, not online: leave u0 out
            online.values[0] = expected[0]
        assert online.values == expected, t
        checked += sum(v is not None for row in expected for v in row)
    assert checked > 100
    # some rows expired in between: the same reads return nulls where the training set does
    late = store.get_features(REFS, [{"user_id": u} for u in users], at_us=end + 9 * DAY)
    assert sum(v is None for row in late.values for v in row) > sum(
        v is None for row in store.get_features(REFS, [{"user_id": u} for u in users],
                                                at_us=end).values for v in row)
    # an exact read before the stored row's time is refused, naming entity and feature
    ts0 = int(redis_client.hget("tessera:user:u2", feature_field(profile, "tier")).split(b":")[0])
    with pytest.raises(BatchReadError, match="profile:age_days of tessera:user:u2 cannot be"):
        store.get_features(REFS, [{"user_id": "u2"}], at_us=ts0 - 1)


def test_one_round_trip_with_windowed_features_rerun_and_incremental(redis_client, tmp_path):
    now = time.time_ns() // 1000
    # a windowed view written by the stream worker into the same hashes
    events = [normalize(transactions, {"user_id": f"u{i % 3}", "merchant_id": "m",
                                       "amount": 10.0 + i, "country": "FR",
                                       "ts": (now - i * 60_000_000) // 1000}) for i in range(30)]
    records = EventColumns.from_events(transactions, list(enumerate(events)))
    EventLog(tmp_path / "offline").append(transactions, to_table(transactions, records, now),
                                          topic="transactions", partition=0)
    OnlineWriter(transactions, [user_spend], open_backend(redis_client), "g", 3_600_000_000).apply(
        {0: (records, 29, 0, 29)})
    _write(tmp_path, [(f"u{i}", now - 5 * DAY + i, i, float(i), True, "a") for i in range(3)])
    materialize_view(redis_client, profile, tmp_path, end_us=now)
    first = _dump(redis_client)
    assert set(first) == {"tessera:user:u0", "tessera:user:u1", "tessera:user:u2"}
    for h in first.values():  # the worker's rings and the 4 batch fields, side by side
        assert sum(f.startswith(b"profile@") for f in h) == len(REFS)
        assert any(f.startswith(b"user_spend@") for f in h)
    assert all(0 < redis_client.ttl(k) for k in first)
    repo = FeatureRepo.of([user_spend, profile])
    refs = ["user_spend:amount_sum_24h", *REFS]
    plan = OnlineStore(redis_client, repo).plan(refs)
    assert len(plan.by_entity) == 1 and len(plan.single.fields) == 1 + len(REFS)  # one HMGET
    t = now + 1
    online = OnlineStore(redis_client, repo).get_features(refs, [{"user_id": "u1"}], at_us=t)
    spine = pl.DataFrame({"user_id": ["u1"], "ts": [t]}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")))
    off = training_set(spine, refs, repo=repo, settings=Settings(tmp_path),
                       event_log=EventLog(tmp_path / "offline"))
    assert online.values[0] == [off[c][0] for c in off.columns[2:]]
    # a rerun over the same input leaves byte-for-byte the same hashes
    materialize_view(redis_client, profile, tmp_path, end_us=now)
    assert _dump(redis_client) == first
    # incremental: only rows after the last run's end; u1 gets a new row, u0's older row is
    # not taken over the newer one already online
    later = now + DAY
    _write(tmp_path, [(f"u{i}", now - 5 * DAY + i, i, float(i), True, "a") for i in range(3)]
           + [("u1", now + 10, 100, 100.0, False, "b"), ("u3", now + 20, 3, 3.0, None, "c")])
    report = materialize_view(redis_client, profile, tmp_path, end_us=later, incremental=True)
    assert report.start_us == now and report.entities == 2
    after = _dump(redis_client)
    assert after["tessera:user:u0"] == first["tessera:user:u0"]
    assert after["tessera:user:u1"] != first["tessera:user:u1"]
    got = OnlineStore(redis_client, repo).get_features(
        REFS, [{"user_id": "u1"}, {"user_id": "u3"}], at_us=later)
    assert got.values == [[100, 100.0, False, "b"], [3, 3.0, None, "c"]]


def test_a_run_that_crashed_midway_then_rerun_leaves_the_same_state(any_redis_client, tmp_path):
    redis_client = any_redis_client
    now = time.time_ns() // 1000
    _write(tmp_path, [(f"u{i}", now - DAY - i, i, i / 3, i % 2 == 0, f"t{i}") for i in range(10)])
    materialize_view(redis_client, profile, tmp_path, end_us=now)
    clean = _dump(redis_client)
    redis_client.flushdb()

    def crash(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        materialize_view(redis_client, profile, tmp_path, end_us=now, progress=crash, chunk=3)
    assert len(_dump(redis_client)) == 3 and last_materialized(redis_client, profile) is None
    materialize_view(redis_client, profile, tmp_path, end_us=now, incremental=True)
    assert _dump(redis_client) == clean and last_materialized(redis_client, profile) == now


def test_skew_check_covers_batch_views(redis_client, tmp_path):
    from features.skew import skew_check

    now = time.time_ns() // 1000
    _write(tmp_path, [(f"u{i}", now - DAY - i, i, i / 7, None, "t") for i in range(30)])
    repo = FeatureRepo.of([profile])
    materialize_view(redis_client, profile, tmp_path, end_us=now)
    log = EventLog(tmp_path / "offline")
    report = skew_check(repo, "profile", redis_client, log, at=now + 1, sample=None)
    assert report.entities == 30 and report.ok
    # a newer row in the file, not materialized yet: the check names it
    _write(tmp_path, [(f"u{i}", now - DAY - i, i, i / 7, None, "t") for i in range(30)]
           + [("u4", now - 5, 99, 9.9, True, "new")])
    report = skew_check(repo, "profile", redis_client, log, at=now + 1, sample=None)
    assert {(m.entity["user_id"], m.feature) for m in report.mismatches} == {
        ("u4", n) for n in profile.feature_names}
    # --incremental takes rows stamped after the last run's end: this backdated row needs a
    # full run (docs/online.md)
    materialize_view(redis_client, profile, tmp_path, end_us=now + 1, incremental=True)
    assert not skew_check(repo, "profile", redis_client, log, at=now + 1, sample=None).ok
    materialize_view(redis_client, profile, tmp_path, end_us=now + 1)
    assert skew_check(repo, "profile", redis_client, log, at=now + 1, sample=None).ok


def test_cli_every_runs_on_a_timer_until_sigterm(redis_client, redis_url, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    now = time.time_ns() // 1000
    _write(tmp_path, [(f"u{i}", now - DAY, i, 1.0, True, "t") for i in range(5)])
    repo_file = tmp_path / "repo.py"
    repo_file.write_text(
        "from features import BatchFeatureView, Entity\n"
        "user = Entity('user', keys=['user_id'])\n"
        "profile = BatchFeatureView('profile', entity=user, path='profile.parquet',\n"
        "    timestamp_field='ts', schema={'age_days': 'int', 'limit': 'float', 'vip': 'bool',\n"
        "    'tier': 'string'}, ttl='10d')\n")
    env = {**os.environ, "REDIS_URL": redis_url, "TESSERA_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "tessera", "materialize", "--repo",
                             str(repo_file), "--every", "1s"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        seen: set[int] = set()
        while len(seen) < 2 and time.monotonic() < deadline:  # two runs, a second apart
            end = last_materialized(redis_client, profile)
            if end is not None:
                seen.add(end)
            time.sleep(0.1)
        assert len(seen) == 2, proc.stderr.read() if proc.poll() is not None else seen
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "profile@" in out and "5 entities written" in out
    assert len(_dump(redis_client)) == 5
