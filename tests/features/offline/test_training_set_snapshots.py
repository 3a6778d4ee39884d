"""Training sets under compaction and epochs: one snapshot per read, a content fingerprint."""

from __future__ import annotations

import random
import threading

import pyarrow as pa

from features.offline.event_log import EventLog
from features.offline.training_set import build_training_set
from features.settings import Settings
from tests.features.offline.test_training_set import (
    REPO,
    SOURCE,
    T0,
    VIEW,
    H,
    _append,
    _events,
    _spine,
)

REFS = [f"pair_stats:{f.name}" for f in VIEW.features]


def _world(tmp_path, chunks: int, retire_after_s: float = 600.0):
    """The same 400 events written in ``chunks`` appends (so a different file layout)."""
    rng = random.Random(11)
    settings = Settings(tmp_path)
    log = EventLog(settings.offline_dir, retire_after_s=retire_after_s)
    events = _events(rng, 400)
    step = -(-len(events) // chunks)
    for i in range(0, len(events), step):
        _append(log, events[i:i + step])
    return settings, log, _spine(rng, 150)


def test_fingerprint_follows_content_not_file_layout(tmp_path):
    s1, log1, spine = _world(tmp_path / "one", chunks=1)
    s8, log8, _ = _world(tmp_path / "eight", chunks=8)
    assert len(log8.files(SOURCE)) > len(log1.files(SOURCE))
    a = build_training_set(spine, REFS, repo=REPO, settings=s1)
    b = build_training_set(spine, REFS, repo=REPO, settings=s8)
    assert a.frame.equals(b.frame) and a.fingerprint == b.fingerprint
    assert log8.compact(SOURCE) > 0
    c = build_training_set(spine, REFS, repo=REPO, settings=s8)
    assert c.frame.equals(a.frame) and c.fingerprint == a.fingerprint
    # one changed value (same layout: one more event of a known entity) changes it
    _append(log8, [{"user_id": "a", "shop": 1, "amount": 3.25, "ts": T0 + 5 * H,
                    "_offset": 10_000}])
    assert build_training_set(spine, REFS, repo=REPO, settings=s8).fingerprint != a.fingerprint


def test_builds_during_compaction_all_succeed_identically(tmp_path):
    settings, log, spine = _world(tmp_path, chunks=10)
    reference = build_training_set(spine, REFS, repo=REPO, settings=settings)
    stop = threading.Event()
    compactions = []
    errors: list[BaseException] = []
    results = []

    def compactor() -> None:
        try:
            while not stop.is_set():  # min_files=1: every round rewrites every date partition
                compactions.append(log.compact(SOURCE, min_files=1))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    def builder() -> None:
        try:
            for _ in range(12):
                results.append(build_training_set(spine, REFS, repo=REPO, settings=settings,
                                                  event_log=EventLog(settings.offline_dir)))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=compactor)] + [threading.Thread(target=builder)
                                                      for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join(120)
    stop.set()
    threads[0].join(60)
    assert not errors, errors
    assert len(results) == 36 and len(compactions) >= 3
    assert {r.fingerprint for r in results} == {reference.fingerprint}
    assert all(r.frame.equals(reference.frame) for r in results)


def test_a_vanished_file_is_read_again_from_a_fresh_snapshot(tmp_path, monkeypatch):
    settings, log, spine = _world(tmp_path, chunks=4, retire_after_s=0)
    reference = build_training_set(spine, REFS, repo=REPO, settings=settings, event_log=log)
    stale = log.snapshot(SOURCE)
    assert log.compact(SOURCE) > 0  # grace 0: the stale snapshot's files are gone
    real = log.snapshot
    handed = []

    def snapshot(source):
        handed.append(source)
        return stale if len(handed) == 1 else real(source)

    monkeypatch.setattr(log, "snapshot", snapshot)
    again = build_training_set(spine, REFS, repo=REPO, settings=settings, event_log=log)
    assert len(handed) == 2  # the stale one failed, the fresh one was read
    assert again.frame.equals(reference.frame) and again.fingerprint == reference.fingerprint


def test_last_breaks_ties_by_epoch_then_offset(tmp_path):
    settings = Settings(tmp_path)
    log = EventLog(settings.offline_dir)
    ts = T0 + H
    _append(log, [{"user_id": "a", "shop": 1, "amount": 1.0, "ts": ts, "_offset": 100},
                  {"user_id": "a", "shop": 1, "amount": 2.0, "ts": ts, "_offset": 101}])
    assert log.begin_epoch(SOURCE, "buys", 0, 1)
    # the topic was recreated: offset 3 of epoch 1 is later in the log than offset 101
    _append(log, [{"user_id": "a", "shop": 1, "amount": 7.0, "ts": ts, "_offset": 3}])
    spine = pa.table({"user_id": ["a"], "shop": [1],
                      "ts": pa.array([ts + 60_000_000], pa.timestamp("us", tz="UTC"))})
    out = build_training_set(spine, ["pair_stats:amount_last_1h", "pair_stats:count_1h"],
                             repo=REPO, settings=settings).frame
    assert out["pair_stats__amount_last_1h"].to_list() == [7.0]
    assert out["pair_stats__count_1h"].to_list() == [3]  # every epoch is read
