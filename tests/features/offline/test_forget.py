"""Forgetting an entity in the event log: no row of it in any Parquet file afterwards (listed,
retired or orphaned), other entities untouched, training sets equal to those of a log that
never had it (fingerprint included), and a crash mid-forget leaves the old snapshot whole."""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

import features.offline.storage as storage_mod
from features.offline.event_log import EventLog
from features.offline.forget import forget_events
from features.offline.training_set import build_training_set
from features.settings import Settings
from tests.features.offline.test_training_set import REPO, SOURCE, _append, _events, _spine

REFS = [f"pair_stats:{f.name}" for f in REPO.views["pair_stats"].features]
GONE = ("a", "1")  # the composite (user_id, shop) key to forget; shop is an int column


IS_GONE = (pl.col("user_id") == "a") & (pl.col("shop") == 1)


def every_parquet_row(root: Path) -> pl.DataFrame:
    """Every row of every Parquet file under ``root``, listed by a manifest or not."""
    frames = [pl.read_parquet(p).select("user_id", "shop", "_offset")
              for p in sorted(root.rglob("*.parquet"))]
    return pl.concat(frames) if frames else pl.DataFrame()


def _world(root: Path, events: list[dict]) -> tuple[Settings, EventLog]:
    """The events in four appends with a compaction between (so retired files exist too)."""
    settings = Settings(root)
    log = EventLog(settings.offline_dir, retire_after_s=3600)
    step = -(-len(events) // 4)
    for i in range(0, len(events), step):
        _append(log, events[i:i + step])
        if i == step:
            assert log.compact(SOURCE) > 0
    return settings, log


@pytest.fixture
def world(tmp_path):
    rng = random.Random(5)
    events = _events(rng, 600)
    spine = _spine(rng, 200)
    settings, log = _world(tmp_path / "had", events)
    assert log.snapshot(SOURCE).files and log._read_manifest(SOURCE)["retired"]
    return settings, log, events, spine


def test_nothing_of_the_entity_remains_and_others_are_untouched(world):
    settings, log, events, _ = world
    root = settings.offline_dir
    before = every_parquet_row(root)
    assert before.filter(IS_GONE).height > 0
    others = log.scan(SOURCE).collect().filter(~IS_GONE).sort("_offset")
    gen = log.snapshot(SOURCE).generation
    removal = forget_events(log, SOURCE, GONE)
    n = sum(1 for e in events if (e["user_id"], e["shop"]) == ("a", 1))
    assert removal.rows == n > 0 and removal.files > 0 and removal.retired_deleted > 0
    assert removal.generation == gen + 1 == log.snapshot(SOURCE).generation
    after = every_parquet_row(root)  # every file on disk, not only the listed ones
    assert after.filter(IS_GONE).height == 0
    assert log.scan(SOURCE).collect().sort("_offset").equals(others)
    assert len(log.removed_offsets(SOURCE, "buys", 0, 0)) == n
    assert forget_events(log, SOURCE, GONE).rows == 0  # again: nothing left, nothing changes
    assert log.snapshot(SOURCE).generation == gen + 1


def test_training_sets_afterwards_equal_a_log_that_never_had_it(world, tmp_path):
    settings, log, events, spine = world
    with_it = build_training_set(spine, REFS, repo=REPO, settings=settings)
    spine_without = spine.filter(~IS_GONE)
    others_before = build_training_set(spine_without, REFS, repo=REPO, settings=settings)
    forget_events(log, SOURCE, GONE)
    never, _ = _world(tmp_path / "never",
                      [e for e in events if (e["user_id"], e["shop"]) != ("a", 1)])
    got = build_training_set(spine, REFS, repo=REPO, settings=settings)
    want = build_training_set(spine, REFS, repo=REPO, settings=never)
    assert got.frame.equals(want.frame) and got.fingerprint == want.fingerprint
    assert got.fingerprint != with_it.fingerprint  # a cache of the old set is not reused
    gone_rows = spine.with_row_index().filter(IS_GONE)["index"].to_list()
    assert gone_rows and got.frame[gone_rows, "pair_stats__count_24h"].to_list() == [0] * len(
        gone_rows)
    # training sets over other entities only are the same, fingerprint included
    others = build_training_set(spine_without, REFS, repo=REPO, settings=settings)
    assert others.frame.equals(others_before.frame)
    assert others.fingerprint == others_before.fingerprint


def test_a_crash_mid_forget_leaves_the_old_snapshot(world, monkeypatch):
    settings, log, _, _ = world
    snap = log.snapshot(SOURCE)
    rows = log.scan(SOURCE, snapshot=snap).collect().sort("_offset")
    real, calls = pq.write_table, []

    def write_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second rewritten file
            raise OSError("disk gone")
        return real(*args, **kwargs)

    monkeypatch.setattr(storage_mod.pq, "write_table", write_then_die)
    with pytest.raises(OSError, match="disk gone"):
        forget_events(log, SOURCE, GONE)
    monkeypatch.setattr(storage_mod.pq, "write_table", real)
    assert log.snapshot(SOURCE) == snap  # nothing committed
    assert log.scan(SOURCE).collect().sort("_offset").equals(rows)
    assert forget_events(log, SOURCE, GONE).rows > 0  # run again: done
    after = every_parquet_row(settings.offline_dir)
    assert after.filter(IS_GONE).height == 0
