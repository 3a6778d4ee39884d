"""Entity partitions (``features.offline.partitions``): a training set built a few rows at a
time equals the whole build exactly (values, nulls, types, spine order, fingerprint) and the
brute force, on the property-test worlds, a many-entity world and the served timeline."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

import features.offline.training_set as builder
from features.offline.event_log import EventLog
from features.offline.partitions import ContentDigest, entity_bounds, split_rows
from features.settings import Settings
from tests.features.offline import test_served as served_world
from tests.features.offline import test_training_set as base
from tests.reference import brute_force, close

world = base.world  # the property tests' event log and spine (a fixture)
ALL = [f"pair_stats:{f.name}" for f in base.VIEW.features]


@pytest.fixture
def partitions(monkeypatch):
    """How many partitions each windowed source or batch view was folded in, per call."""
    counts: list[int] = []
    split = builder.split_rows

    def counting(codes: np.ndarray, bounds: np.ndarray) -> list:
        parts = split(codes, bounds)
        counts.append(len(parts))
        return parts

    monkeypatch.setattr(builder, "split_rows", counting)
    return counts


def _profile(home, rng: random.Random, users: list[str], n: int) -> None:
    """Batch rows with ties on ts (the later row in the file wins) and null values."""
    (home / "batch").mkdir(exist_ok=True)
    day = datetime(2026, 3, 1, tzinfo=UTC)
    pl.DataFrame([{"user_id": rng.choice(users), "shop": rng.randint(1, 2),
                   "ts": day + timedelta(hours=rng.randrange(0, 80, 4)),
                   "limit": rng.choice([None, rng.uniform(0, 100)]), "tier": rng.randint(1, 5)}
                  for _ in range(n)]).write_parquet(home / "batch" / "profile.parquet")


def _build(spine, refs, settings, rows: int, **kw):  # noqa: ANN001, ANN202
    return builder.build_training_set(
        spine, refs, repo=base.REPO, **kw,
        settings=Settings(settings.home, training_partition_rows=rows))


def _same(a, b) -> None:  # noqa: ANN001
    assert a.frame.equals(b.frame) and a.frame.schema == b.frame.schema
    assert a.fingerprint == b.fingerprint and a.files == b.files


def _check_brute_force(df: pl.DataFrame, events: list[dict]) -> None:
    for row in df.iter_rows(named=True):
        t = int(row["ts"].replace(tzinfo=UTC).timestamp() * 1_000_000)
        mine = [(e["ts"], e["_offset"], e["amount"]) for e in events
                if (e["user_id"], e["shop"]) == (row["user_id"], row["shop"])]
        for f in base.VIEW.features:
            want = brute_force(mine, f.fn, t, f.window, f.hop)
            got = row[f"pair_stats__{f.name}"]
            assert close(got, want) if f.fn in ("sum", "mean", "stddev") else got == want, (
                f.name, row, got, want)


@pytest.mark.parametrize("rows", [1, 40, 150])
def test_world_in_partitions_equals_the_whole_build(world, partitions, rows):
    settings, _, events, spine = world
    _profile(settings.home, random.Random(11), base.USERS, 60)
    refs = ALL + ["profile:limit", "profile:tier"]
    whole = _build(spine, refs, settings, 0)
    assert partitions == [1, 1]
    parted = _build(spine, refs, settings, rows)
    assert min(partitions[2:]) > 1  # both the events and the batch rows were split
    _same(parted, whole)
    _check_brute_force(parted.frame, events)


def test_many_entities_null_keys_and_fields_in_partitions(tmp_path, partitions):
    """40 entities, spine keys with nulls and never-seen ones, events with null amounts, two
    log partitions: 1..many entities per partition."""
    rng = random.Random(5)
    users = [f"u{i}" for i in range(20)]
    log = EventLog(Settings(tmp_path).offline_dir)
    events = []
    for offset in range(1500):
        events.append({"user_id": rng.choice(users), "shop": rng.randint(1, 2),
                       "amount": rng.choice([rng.uniform(-5, 50), 7.0]),
                       "ts": base.T0 + rng.randrange(0, 72 * base.H, 60_000_000),
                       "_offset": offset})
    base._append(log, events[:900], partition=0)
    base._append(log, events[900:], partition=1)
    spine = pl.DataFrame([{"user_id": rng.choice([*users, "never", None]),
                           "shop": rng.choice([1, 2, None]),
                           "ts": datetime(2026, 3, 1) + timedelta(minutes=rng.randrange(0, 4800))}
                          for _ in range(700)])
    _profile(tmp_path, rng, users, 300)
    refs = ALL + ["profile:limit", "profile:tier"]
    whole = _build(spine, refs, Settings(tmp_path), 0)
    for rows in (1, 97, 600):
        del partitions[:]
        _same(_build(spine, refs, Settings(tmp_path), rows), whole)
        assert min(partitions) > 1
    keyed = whole.frame.filter(pl.col("user_id").is_not_null() & pl.col("shop").is_not_null())
    _check_brute_force(keyed, events)
    assert (whole.frame.filter(pl.col("user_id").is_null())["pair_stats__count_2d"] == 0).all()


@pytest.mark.parametrize("timeline", ["served", "corrected-without-late"])
def test_served_timeline_in_partitions_equals_the_whole_build(tmp_path, partitions, timeline):
    rng = random.Random(3)
    served_world._log(tmp_path, served_world._events(rng, 600))
    spine = served_world._spine(rng, 400)
    kw = {"repo": served_world.REPO, "timeline": timeline}
    whole = builder.build_training_set(spine, served_world.REFS, **kw,
                                       settings=Settings(tmp_path, training_partition_rows=0))
    parted = builder.build_training_set(spine, served_world.REFS, **kw,
                                        settings=Settings(tmp_path, training_partition_rows=50))
    assert partitions[0] == 1 and partitions[1] > 1
    _same(parted, whole)


def test_bounds_cover_every_code_in_contiguous_balanced_ranges():
    rng = np.random.default_rng(0)
    ncodes = 1000
    ev = rng.integers(0, ncodes, 50_000)
    q = np.concatenate([rng.integers(0, ncodes, 9_000), np.full(1_000, ncodes)])  # null keys
    bounds = entity_bounds([ev, q], ncodes, 6_000)
    assert bounds[0] == 0 and bounds[-1] == ncodes + 1 and (np.diff(bounds) > 0).all()
    assert len(bounds) - 1 == 10
    parts = split_rows(ev, bounds)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(ev)))
    for k, rows in enumerate(parts):
        assert (np.diff(rows) > 0).all()  # original order kept
        assert ((ev[rows] >= bounds[k]) & (ev[rows] < bounds[k + 1])).all()
    sizes = [len(r) for r in parts]
    assert max(sizes) < 1.3 * min(sizes)
    # one entity is never split; small inputs are one partition
    assert entity_bounds([np.zeros(100, dtype=np.int64)], 1, 10).tolist() == [0, 1, 2]
    assert entity_bounds([ev], ncodes, 0).tolist() == [0, ncodes + 1]
    assert split_rows(ev, np.array([0, ncodes + 1])) == [None]


def test_content_digest_is_the_same_for_any_split_and_follows_every_value():
    df = pl.DataFrame({"a": [1, 2, 3, 4, 5, 6, 7], "b": [1.0, None, 3.0, None, 5.0, 6.0, None]})

    def digest(*frames: pl.DataFrame) -> str:
        d = ContentDigest()
        for f in frames:
            d.update(f)
        return d.hexdigest()

    whole = digest(df)
    assert digest(df.head(3), df.tail(4)) == whole
    assert digest(df.head(0), df.head(1), df.slice(1, 5), df.tail(1)) == whole
    assert digest(pl.concat([df.head(2), df.tail(5)], rechunk=False)) == whole
    assert digest(df.with_columns(pl.col("b").fill_null(0.0))) != whole  # a null is not 0
    assert digest(df.with_columns(pl.col("b").shift(1))) != whole
    assert digest(df.reverse()) != whole


def test_key_hash_collisions_fall_back_to_the_keys_themselves(world, monkeypatch):
    """Codes and joins go through a 64-bit hash of the keys; with a hash that collides all
    the time the result must not change (every matched key is compared)."""
    import features.offline.entity_codes as entity_codes

    settings, _, events, spine = world
    whole = _build(spine, ALL, settings, 0)
    real = entity_codes._key_hash
    monkeypatch.setattr(entity_codes, "_key_hash", lambda keys: real(keys) % 2)
    for rows in (0, 40):
        got = _build(spine, ALL, settings, rows)
        assert got.frame.equals(whole.frame) and got.frame.schema == whole.frame.schema
    _check_brute_force(got.frame, events)
