"""Point-in-time training sets: events -> event log -> training set == brute force, row by row."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa
import pytest

from features import Aggregate, BatchFeatureView, Entity, EventSource, FeatureRepo, FeatureView
from features.errors import OfflineStoreError, UnknownFeatureError
from features.offline.event_log import EventLog
from features.offline.training_set import (
    build_training_set,
    read_fingerprint,
    training_set,
    write_training_set,
)
from features.settings import Settings
from tests.reference import brute_force, close

H = 3_600_000_000
T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1_000_000)
FNS = ["count", "sum", "mean", "min", "max", "last", "stddev"]

pair = Entity("pair", ["user_id", "shop"])
SOURCE = EventSource(
    "buys",
    {"user_id": "string", "shop": "int", "amount": "float", "ts": "timestamp"},
    timestamp_field="ts",
    entity=pair,
)
VIEW = FeatureView("pair_stats", SOURCE, [Aggregate(fn, ["1h", "24h"], field="amount")
                                          for fn in FNS if fn != "count"]
                   + [Aggregate("count", ["1h", "24h", "2d"])])
PROFILE = BatchFeatureView("profile", pair, "profile.parquet", "ts",
                           {"limit": "float", "tier": "int"}, ttl="12h")
REPO = FeatureRepo.of([VIEW, PROFILE])
USERS = ["a", "b", "c"]


def _events(rng: random.Random, n: int) -> list[dict]:
    out = []
    for offset in range(n):
        out.append({
            "user_id": rng.choice(USERS), "shop": rng.randint(1, 2),
            "amount": rng.choice([rng.uniform(-50, 500), 10.0]),
            "ts": T0 + rng.randrange(0, 72 * H, 60_000_000 * rng.choice([1, 30, 60])),
            "_offset": offset,
        })
    return out


def _append(log: EventLog, events: list[dict], partition: int = 0) -> None:
    table = pa.table({
        "user_id": [e["user_id"] for e in events],
        "shop": [e["shop"] for e in events],
        "amount": [e["amount"] for e in events],
        "ts": pa.array([e["ts"] for e in events], pa.timestamp("us", tz="UTC")),
        "_offset": [e["_offset"] for e in events],
        # received when they happened, unless the test says otherwise
        "_ingest_ts": pa.array([e.get("_ingest_ts", e["ts"]) for e in events],
                               pa.timestamp("us", tz="UTC")),
    })
    log.append(SOURCE, table, topic="buys", partition=partition)


def _spine(rng: random.Random, n: int) -> pl.DataFrame:
    rows = [{"user_id": rng.choice(USERS + ["never"]), "shop": rng.randint(1, 2),
             "ts": datetime(2026, 3, 1) + timedelta(microseconds=rng.randrange(0, 80 * H)),
             "label": rng.random() < 0.5} for _ in range(n)]
    rows += rows[:5]  # duplicates
    return pl.DataFrame(rows)


@pytest.fixture
def world(tmp_path):
    rng = random.Random(7)
    settings = Settings(tmp_path)
    log = EventLog(settings.offline_dir)
    events = _events(rng, 400)
    _append(log, events[:250])
    _append(log, events[200:])  # an overlapping replay
    return settings, log, events, _spine(rng, 120)


def test_windowed_features_match_brute_force_on_every_row(world):
    settings, log, events, spine = world
    refs = [f"pair_stats:{f.name}" for f in VIEW.features]
    df = training_set(spine, refs, repo=REPO, settings=settings)
    assert df.columns[:4] == spine.columns
    assert df.select(spine.columns).equals(spine)  # order and spine columns kept
    for row in df.iter_rows(named=True):
        t = int(row["ts"].replace(tzinfo=UTC).timestamp() * 1_000_000)
        mine = [(e["ts"], e["_offset"], e["amount"]) for e in events
                if e["user_id"] == row["user_id"] and e["shop"] == row["shop"]]
        for f in VIEW.features:
            want = brute_force(mine, f.fn, t, f.window, f.hop)
            got = row[f"pair_stats__{f.name}"]
            assert close(got, want) if f.fn in ("sum", "mean", "stddev") else got == want, (
                f.name, row, got, want)


def test_time_zones_and_never_seen_entities(world):
    settings, _, _, spine = world
    refs = ["pair_stats:count_24h", "pair_stats:amount_sum_24h", "pair_stats:amount_max_24h"]
    naive = training_set(spine, refs, repo=REPO, settings=settings)
    aware = spine.with_columns(pl.col("ts").dt.replace_time_zone("UTC")
                               .dt.convert_time_zone("America/New_York"))
    assert aware["ts"].dtype == pl.Datetime("us", "America/New_York")
    got = training_set(aware, refs, repo=REPO, settings=settings)
    assert got.drop("ts").equals(naive.drop("ts"))
    never = naive.filter(pl.col("user_id") == "never")
    assert never.height > 0
    assert never["pair_stats__count_24h"].to_list() == [0] * never.height
    assert never["pair_stats__amount_sum_24h"].to_list() == [0.0] * never.height
    assert never["pair_stats__amount_max_24h"].null_count() == never.height


def test_batch_view_as_of_join_with_ttl(tmp_path):
    settings = Settings(tmp_path)
    (tmp_path / "batch").mkdir()
    ny = ZoneInfo("America/New_York")
    pl.DataFrame({
        "user_id": ["a", "a", "a", "b"],
        "shop": [1, 1, 1, 1],
        "ts": [datetime(2026, 3, 1, 0, tzinfo=UTC), datetime(2026, 3, 1, 10, tzinfo=UTC),
               datetime(2026, 3, 1, 10, tzinfo=UTC), datetime(2026, 3, 1, 0, tzinfo=UTC)],
        "limit": [100.0, 200.0, 250.0, 7.0],
        "tier": [1, 2, 3, 9],
    }).with_columns(pl.col("ts").dt.convert_time_zone("Europe/Paris")).write_parquet(
        tmp_path / "batch" / "profile.parquet")
    spine = pl.DataFrame({
        "user_id": ["a", "a", "a", "a", "b", "b", "z"],
        "shop": [1, 1, 1, 1, 1, 1, 1],
        "ts": [datetime(2026, 2, 28, 23, tzinfo=UTC), datetime(2026, 3, 1, 0, tzinfo=UTC),
               datetime(2026, 3, 1, 9, 59, tzinfo=UTC), datetime(2026, 3, 1, 10, tzinfo=UTC),
               datetime(2026, 3, 1, 11, 59, tzinfo=UTC), datetime(2026, 3, 1, 12, tzinfo=UTC),
               datetime(2026, 3, 1, 12, tzinfo=UTC)],
    }).with_columns(pl.col("ts").dt.convert_time_zone(str(ny)))
    df = training_set(spine, ["profile:limit", "profile:tier"], repo=REPO, settings=settings)
    # before the first row: null; at exactly ts: included; a tie on ts: the later row wins;
    # t - ts == ttl: expired; unknown entity: null
    assert df["profile__limit"].to_list() == [None, 100.0, 100.0, 250.0, 7.0, None, None]
    assert df["profile__tier"].to_list() == [None, 1, 1, 3, 9, None, None]


def test_training_set_is_reproducible_to_the_byte(world, tmp_path):
    settings, log, _, spine = world
    refs = ["pair_stats:amount_mean_1h", "pair_stats:count_2d", "pair_stats:amount_last_24h"]
    a = build_training_set(spine, refs, repo=REPO, settings=settings)
    b = build_training_set(spine.clone(), refs, repo=REPO, settings=settings)
    assert a.fingerprint == b.fingerprint and a.files
    p1 = write_training_set(a.frame, tmp_path / "one.parquet", a.fingerprint)
    p2 = write_training_set(b.frame, tmp_path / "two.parquet", b.fingerprint)
    assert p1.read_bytes() == p2.read_bytes()
    assert read_fingerprint(p1) == a.fingerprint
    # a different spine or a new event changes the fingerprint
    c = build_training_set(spine.head(50), refs, repo=REPO, settings=settings)
    assert c.fingerprint != a.fingerprint
    _append(log, [{"user_id": "a", "shop": 1, "amount": 1.0, "ts": T0, "_offset": 10_000}])
    d = build_training_set(spine, refs, repo=REPO, settings=settings)
    assert d.fingerprint != a.fingerprint


def test_compaction_does_not_change_the_training_set(world):
    settings, log, _, spine = world
    refs = [f"pair_stats:{f.name}" for f in VIEW.features]
    before = training_set(spine, refs, repo=REPO, settings=settings)
    assert log.compact(SOURCE) > 0
    assert training_set(spine, refs, repo=REPO, settings=settings).equals(before)


def test_clear_errors(world):
    settings, _, _, spine = world
    with pytest.raises(OfflineStoreError, match="shop"):
        training_set(spine.drop("shop"), ["pair_stats:count_1h"], repo=REPO, settings=settings)
    with pytest.raises(OfflineStoreError, match="timestamp column 'when'"):
        training_set(spine, ["pair_stats:count_1h"], repo=REPO, settings=settings,
                     timestamp_column="when")
    with pytest.raises(UnknownFeatureError, match="count_1h"):
        training_set(spine, ["pair_stats:nope"], repo=REPO, settings=settings)
    with pytest.raises(OfflineStoreError, match="does not exist"):
        training_set(spine, ["profile:limit"], repo=REPO, settings=settings)
    with pytest.raises(OfflineStoreError, match="datetime"):
        training_set(spine.with_columns(pl.col("ts").cast(pl.String)), ["pair_stats:count_1h"],
                     repo=REPO, settings=settings)


def test_empty_log_and_empty_spine(tmp_path, world):
    settings = Settings(tmp_path / "empty")
    _, _, _, spine = world
    refs = ["pair_stats:count_1h", "pair_stats:amount_min_1h"]
    df = training_set(spine.with_columns(pl.col("ts").dt.date()), refs, repo=REPO,
                      settings=settings)
    assert df["pair_stats__count_1h"].to_list() == [0] * spine.height
    assert df["pair_stats__amount_min_1h"].null_count() == spine.height
    none = training_set(spine.head(0), refs, repo=REPO, settings=settings)
    assert none.height == 0 and none.columns == spine.columns + [
        "pair_stats__count_1h", "pair_stats__amount_min_1h"]


def test_events_stamped_beyond_max_future_never_count(tmp_path):
    """The stream dead-letters an event stamped more than ``max_future`` after it arrived;
    the training set applies the same rule to the log (skew stays zero)."""
    rng = random.Random(3)
    log = EventLog(tmp_path / "log")
    events = _events(rng, 300)
    ahead = set(rng.sample(range(300), 40))
    for i, e in enumerate(events):  # received a day before their time: a broken clock
        if i in ahead:
            e["_ingest_ts"] = e["ts"] - 24 * H
    _append(log, events)
    spine = _spine(rng, 80)
    out = training_set(spine, ["pair_stats:amount_sum_24h", "pair_stats:count_2d"],
                       repo=REPO, settings=Settings(tmp_path), event_log=log)
    kept = [e for i, e in enumerate(events) if i not in ahead]
    for row in out.iter_rows(named=True):
        t = int(row["ts"].replace(tzinfo=UTC).timestamp() * 1_000_000)
        mine = [(e["ts"], e["_offset"], e["amount"]) for e in kept
                if (e["user_id"], e["shop"]) == (row["user_id"], row["shop"])]
        f_sum, f_count = VIEW.feature("amount_sum_24h"), VIEW.feature("count_2d")
        assert close(row["pair_stats__amount_sum_24h"],
                     brute_force(mine, "sum", t, f_sum.window, f_sum.hop))
        assert row["pair_stats__count_2d"] == brute_force(
            [(ts, o, 1.0) for ts, o, _ in mine], "count", t, f_count.window, f_count.hop)
