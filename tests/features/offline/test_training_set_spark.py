"""engine="spark": the polars builder run per entity-hash partition on Spark (local[2]) gives
the polars builder's frame exactly (values, nulls, types, row order) and the brute force's
values, on the property-test worlds of test_training_set and on a medium spine."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from features import Aggregate, Entity, EventSource, FeatureRepo, FeatureView
from features.errors import OfflineStoreError
from features.offline.event_log import EventLog
from features.offline.training_set import build_training_set, training_set
from features.settings import Settings
from tests.features.offline import test_training_set as base
from tests.features.offline.test_training_set import (
    PROFILE,
    REPO,
    SOURCE,
    T0,
    USERS,
    VIEW,
    H,
    _append,
    _events,
    _spine,
)
from tests.reference import brute_force, close

world = base.world  # the property tests' event log and spine (a fixture)

pytest.importorskip("pyspark")
pytestmark = pytest.mark.integration

ALL = [f"pair_stats:{f.name}" for f in VIEW.features]


@pytest.fixture(scope="session")
def spark():
    from features.offline.spark_engine import spark_session

    # little data: C1 only and a serial GC start the JVM with less CPU
    session = spark_session("local[2]", shuffle_partitions=4, driver_memory="512m",
                            java_options="-XX:+UseSerialGC -XX:TieredStopAtLevel=1")
    yield session
    session.stop()


def _both(spark, spine, refs, **kw):  # noqa: ANN001, ANN202
    """(polars result, spark result) of the same call."""
    from features.offline.spark_engine import build_training_set_spark

    return (build_training_set(spine, refs, **kw),
            build_training_set_spark(spine, refs, spark=spark, **kw))


def _profile(tmp_path, rng: random.Random, n: int = 60) -> None:
    """Batch rows with ties on ts (the later row in the file wins) and null values."""
    (tmp_path / "batch").mkdir(exist_ok=True)
    rows = []
    for _ in range(n):
        rows.append({"user_id": rng.choice(USERS), "shop": rng.randint(1, 2),
                     "ts": datetime(2026, 3, 1, tzinfo=UTC)
                     + timedelta(hours=rng.randrange(0, 80, 4)),
                     "limit": rng.choice([None, rng.uniform(0, 100)]),
                     "tier": rng.randint(1, 5)})
    pl.DataFrame(rows).write_parquet(tmp_path / "batch" / "profile.parquet")


def _as_of(rows: list[dict], user: str, shop: int, t: datetime, col: str):  # noqa: ANN202
    """Naive as-of: the entity's latest row with ts <= t (a tie: the later row), if t - ts is
    under the ttl; else None."""
    best = None
    for r in rows:
        if (r["user_id"], r["shop"]) == (user, shop) and r["ts"] <= t:
            if best is None or r["ts"] >= best["ts"]:
                best = r
    if best is None or (t - best["ts"]) >= timedelta(microseconds=PROFILE.ttl):
        return None
    return best[col]


def _check_windowed(df: pl.DataFrame, events: list[dict], refs: list[str]) -> None:
    for row in df.iter_rows(named=True):
        t = int(row["ts"].replace(tzinfo=UTC).timestamp() * 1_000_000)
        mine = [(e["ts"], e["_offset"], e["amount"]) for e in events
                if (e["user_id"], e["shop"]) == (row["user_id"], row["shop"])]
        for ref in refs:
            f = VIEW.feature(ref.split(":")[1])
            want = brute_force(mine if f.fn != "count" else [(a, b, 1.0) for a, b, _ in mine],
                               f.fn, t, f.window, f.hop)
            got = row[f"pair_stats__{f.name}"]
            assert close(got, want) if f.fn in ("sum", "mean", "stddev") else got == want, (
                f.name, row, got, want)


def test_world_equals_polars_and_brute_force_and_survives_compaction(spark, world, tmp_path):
    settings, log, events, spine = world
    rng = random.Random(11)
    _profile(settings.home, rng)
    refs = ALL + ["profile:limit", "profile:tier"]
    pol, spk = _both(spark, spine, refs, repo=REPO, settings=settings)
    assert spk.frame.equals(pol.frame)  # values, nulls and row order
    assert spk.frame.schema == pol.frame.schema
    assert sorted(spk.files) == sorted(pol.files)
    _check_windowed(spk.frame, events, ALL)
    batch = pl.read_parquet(settings.home / "batch" / "profile.parquet").to_dicts()
    hits = 0
    for row in spk.frame.iter_rows(named=True):
        t = row["ts"].replace(tzinfo=UTC)
        for col in ("limit", "tier"):
            want = _as_of(batch, row["user_id"], row["shop"], t, col)
            assert row[f"profile__{col}"] == want, (row, col, want)
            hits += want is not None
    assert hits > 20  # the as-of join found rows, not only nulls
    # a compaction changes the files, not the training set or its fingerprint
    assert log.compact(SOURCE) > 0
    from features.offline.spark_engine import build_training_set_spark

    again = build_training_set_spark(spine, refs, repo=REPO, settings=settings, spark=spark)
    assert again.frame.equals(spk.frame) and again.fingerprint == spk.fingerprint


def test_time_zones_null_keys_and_max_future(spark, tmp_path):
    """The max_future rule, a tz-aware spine, a null key, unknown entities."""
    rng = random.Random(3)
    log = EventLog(tmp_path / "log")
    events = _events(rng, 300)
    ahead = set(rng.sample(range(300), 40))
    for i, e in enumerate(events):  # received a day before their time: a broken clock
        if i in ahead:
            e["_ingest_ts"] = e["ts"] - 24 * H
    _append(log, events[:150])
    _append(log, events[150:], partition=1)
    naive = _spine(rng, 80).with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("shop")).alias("shop"))
    # times in New York (the engine converts them as the builder does) and a null key
    spine = naive.with_columns(pl.col("ts").dt.replace_time_zone("UTC")
                               .dt.convert_time_zone("America/New_York"))
    refs = ["pair_stats:amount_sum_24h", "pair_stats:count_2d", "pair_stats:amount_last_1h",
            "pair_stats:amount_min_24h"]
    kw = {"repo": REPO, "settings": Settings(tmp_path), "event_log": log}
    pol, spk = _both(spark, spine, refs, **kw)
    assert spk.frame.equals(pol.frame)
    kept = [e for i, e in enumerate(events) if i not in ahead]
    as_naive = spk.frame.with_columns(naive["ts"])
    _check_windowed(as_naive.filter(pl.col("shop").is_not_null()), kept, refs)
    assert spk.frame.filter(pl.col("shop").is_null())["pair_stats__count_2d"].to_list() == [0]
    assert spk.frame["pair_stats__count_2d"].sum() > 0


def test_medium_spine_two_entities(spark, tmp_path):
    """Thousands of spine rows over many entities and two entity kinds (one pass each); every
    row equals the polars builder, a sample equals the brute force."""
    rng = random.Random(5)
    settings = Settings(tmp_path)
    log = EventLog(settings.offline_dir)
    users = [f"u{i}" for i in range(300)]
    buys = [{"user_id": rng.choice(users), "shop": rng.randint(1, 3),
             "amount": round(rng.uniform(0, 300), 2),
             "ts": T0 + rng.randrange(0, 10 * 24 * H), "_offset": o} for o in range(20_000)]
    for p in range(3):
        _append(log, [e for e in buys if int(e["user_id"][1:]) % 3 == p], partition=p)
    user = Entity("user", ["user_id"])
    visits = EventSource("visits", {"user_id": "string", "secs": "float", "ts": "timestamp"},
                         timestamp_field="ts", entity=user)
    per_user = FeatureView("user_visits", visits, [Aggregate("count", ["24h"]),
                                                   Aggregate("max", ["24h"], field="secs")])
    log.append(visits, pl.DataFrame({
        "user_id": [rng.choice(users) for _ in range(5000)],
        "secs": [rng.choice([None, rng.uniform(0, 60)]) for _ in range(5000)],
        "ts": pl.Series([T0 + rng.randrange(0, 10 * 24 * H) for _ in range(5000)]).cast(
            pl.Datetime("us", "UTC")),
        "_offset": range(5000),
        "_ingest_ts": pl.Series([T0 + 11 * 24 * H] * 5000).cast(pl.Datetime("us", "UTC")),
    }).to_arrow(), topic="visits", partition=0)
    repo = FeatureRepo.of([VIEW, per_user])
    n = 8000
    spine = pl.DataFrame({
        "user_id": [rng.choice(users + ["nobody"]) for _ in range(n)],
        "shop": [rng.randint(1, 3) for _ in range(n)],
        "ts": pl.Series([T0 + rng.randrange(0, 11 * 24 * H) for _ in range(n)]).cast(
            pl.Datetime("us")),
    })
    refs = ALL + ["user_visits:count_24h", "user_visits:secs_max_24h"]
    pol, spk = _both(spark, spine, refs, repo=repo, settings=settings)
    assert spk.frame.equals(pol.frame)
    assert spk.frame["user_visits__count_24h"].sum() > 0
    assert spk.frame["pair_stats__count_24h"].sum() > 0
    _check_windowed(spk.frame.sample(150, seed=1), buys, ALL)


def test_errors_and_empty_spine(spark, world):
    settings, _, _, spine = world
    with pytest.raises(OfflineStoreError, match="unknown engine"):
        training_set(spine, ALL, repo=REPO, settings=settings, engine="dask")
    with pytest.raises(OfflineStoreError, match="shop"):
        training_set(spine.drop("shop"), ALL, repo=REPO, settings=settings, engine="spark")
    with pytest.raises(OfflineStoreError, match="null 'ts'"):
        training_set(spine.with_columns(pl.lit(None, pl.Datetime).alias("ts")), ALL, repo=REPO,
                     settings=settings, engine="spark")
    with pytest.raises(OfflineStoreError, match="does not exist"):
        training_set(spine, ["profile:limit"], repo=REPO, settings=settings, engine="spark")
    none = training_set(spine.head(0), ALL, repo=REPO, settings=settings, engine="spark")
    assert none.equals(training_set(spine.head(0), ALL, repo=REPO, settings=settings))


def test_cli_engine_spark_writes_the_polars_file(spark, tmp_path, monkeypatch):
    """``tessera training-set --engine spark`` (on the running session) == the polars CLI."""
    import typer
    from typer.testing import CliRunner

    from features.offline.training_set import read_fingerprint
    from tessera import cli_features

    app = typer.Typer()
    cli_features.register(app)
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    runner = CliRunner()
    example = Path(__file__).resolve().parents[3] / "examples" / "feature_repo.py"
    assert runner.invoke(app, ["apply", "--repo", str(example)]).exit_code == 0
    rng = random.Random(9)
    n = 400
    events = pl.DataFrame({
        "user_id": [rng.choice(["u1", "u2", "u3"]) for _ in range(n)],
        "merchant_id": ["m"] * n, "amount": [rng.uniform(1, 100) for _ in range(n)],
        "country": ["FR"] * n,
        "ts": [datetime(2026, 3, 1) + timedelta(minutes=rng.randrange(0, 3 * 24 * 60))
               for _ in range(n)]})
    events.write_parquet(tmp_path / "events.parquet")
    r = runner.invoke(app, ["import-events", "--source", "transactions", "--file",
                            str(tmp_path / "events.parquet")])
    assert r.exit_code == 0, r.output
    pl.DataFrame({"user_id": ["u1", "u2", "u3", "u4"] * 10,
                  "ts": [datetime(2026, 3, 1) + timedelta(hours=2 * i) for i in range(40)]}
                 ).write_parquet(tmp_path / "spine.parquet")
    base_args = ["training-set", "--spine", str(tmp_path / "spine.parquet"), "--features",
                 "user_txn_count:txn_count_24h,user_spend:amount_sum_1h"]
    outs = {}
    for engine in ("polars", "spark"):
        outs[engine] = tmp_path / f"{engine}.parquet"
        r = runner.invoke(app, [*base_args, "--out", str(outs[engine]), "--engine", engine])
        assert r.exit_code == 0, r.output
        assert "rows: 40" in r.output
    got, want = pl.read_parquet(outs["spark"]), pl.read_parquet(outs["polars"])
    assert got.equals(want) and want["user_txn_count__txn_count_24h"].sum() > 0
    # the Spark engine's own fingerprint (per partition): proof the Spark path ran
    assert read_fingerprint(outs["spark"]) not in (None, read_fingerprint(outs["polars"]))


def test_files_vanishing_under_spark_are_read_again(spark, tmp_path):
    """A compaction deletes the snapshot's files before Spark reads them (no grace period):
    the pass is run again from a fresh snapshot, as the polars builder rereads a source."""
    from features.offline.spark_engine import build_training_set_spark

    settings = Settings(tmp_path)
    log = EventLog(settings.offline_dir, retire_after_s=0)
    rng = random.Random(4)
    events = _events(rng, 300)
    for i in range(3):  # several files per date, so the compaction merges (and deletes) them
        _append(log, events[i * 100:(i + 1) * 100])
    spine = _spine(rng, 60)
    want = build_training_set(spine, ALL, repo=REPO, settings=settings, event_log=log)

    class Compacting(EventLog):
        snapshots = 0

        def snapshot(self, source):  # noqa: ANN001, ANN202
            snap = super().snapshot(source)
            Compacting.snapshots += 1
            if Compacting.snapshots == 1:
                assert self.compact(SOURCE) > 0  # the files of `snap` are gone now
            return snap

    racing = Compacting(settings.offline_dir, retire_after_s=0)
    got = build_training_set_spark(spine, ALL, repo=REPO, settings=settings, event_log=racing,
                                   spark=spark)
    assert Compacting.snapshots == 2
    assert got.frame.equals(want.frame)
