"""The event log on a real GCS-protocol server (fake-gcs-server, from
``tests/conftest.py::gcs_bucket``), as ``test_event_log_s3.py`` on S3: the same rows and
training sets as on a local disk, a writer killed mid-flush leaves nothing half-visible, and
two writers racing on one manifest lose no commit (``ifGenerationMatch`` decides)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import polars as pl
import pytest

import features.offline.committed_log as committed_log_mod
from features.offline.committed_log import CommitConflict, ManifestLog
from features.offline.event_log import EventLog
from features.offline.training_set import training_set
from features.settings import Settings
from tests.features.offline.test_event_log import SOURCE, offsets_in, rows
from tests.features.offline.test_training_set import REPO, VIEW, _append, _events, _spine
from tests.storage.test_event_log_s3 import CHILD

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gs_root(gcs_bucket) -> str:
    _, bucket = gcs_bucket
    return f"gs://{bucket}/{uuid.uuid4().hex[:8]}/offline"


def test_round_trip_and_training_set_equal_local_disk(gs_root, tmp_path):
    rng = random.Random(7)
    events = _events(rng, 300)
    spine = _spine(rng, 80)
    local, remote = EventLog(tmp_path / "offline"), EventLog(gs_root)
    for log in (local, remote):
        _append(log, events[:200])
        _append(log, events[150:])  # an overlapping replay writes nothing twice
    src = VIEW.source
    assert remote.committed_offset(src, "buys", 0) == 299
    cols = ["user_id", "shop", "amount", "ts", "_offset", "_epoch"]
    a = local.scan(src).collect().select(cols).sort("_offset")
    b = remote.scan(src).collect().select(cols).sort("_offset")
    assert b.height == 300 and a.equals(b)
    assert {r for r, _ in remote.files(src)} and all(
        r.startswith("date=") for r, _ in remote.files(src))
    refs = [f"pair_stats:{f.name}" for f in VIEW.features]
    settings = Settings(tmp_path)
    want = training_set(spine, refs, repo=REPO, settings=settings, event_log=local)
    got = training_set(spine, refs, repo=REPO, settings=settings, event_log=remote)
    assert got.height == spine.height and got.equals(want)
    before = remote.files(src)  # compaction on the object store: same rows, fewer files
    dates = {r.split("/")[0] for r, _ in before}
    assert len(before) > len(dates) and remote.compact(src) == len(before)
    assert len(remote.files(src)) == len(dates)
    assert remote.scan(src).collect().select(cols).sort("_offset").equals(a)


def test_settings_offline_uri_points_the_log_at_gcs(gs_root, tmp_path):
    settings = Settings(tmp_path, offline_uri=gs_root)
    assert settings.offline_location == gs_root
    EventLog(settings.offline_location).append(SOURCE, rows(list(range(5))), topic="txns",
                                               partition=0)
    assert offsets_in(EventLog(gs_root)) == list(range(5))
    assert not (tmp_path / "offline").exists()  # nothing on the local disk


def test_kill_9_mid_flush_leaves_every_committed_batch_exactly_once(gs_root, monkeypatch):
    """The worker's offline sink in a child process (STORAGE_EMULATOR_HOST inherited),
    killed after writing a flush's data objects and before its manifest swap."""
    batch, slow_from = 25, 3
    proc = subprocess.Popen([sys.executable, "-c", CHILD, gs_root, str(batch), str(slow_from)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    seen = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the writer died before its fourth flush"
            seen.append(line.split())
            if seen[-1][0] == "wrote":
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert seen[-1] == ["wrote", str(slow_from)]
    log = EventLog(gs_root)
    assert offsets_in(log) == list(range(slow_from * batch))  # each exactly once, nothing half
    assert log.committed_offset(SOURCE, "txns", 0) == slow_from * batch - 1
    store = log.source_store(SOURCE)
    listed = {r for r, _ in log.files(SOURCE)}
    on_store = {e.rel for e in store.list_files() if e.rel.startswith("date=")}
    assert listed <= on_store and len(on_store - listed) == 4  # the killed flush's 4 dates
    monkeypatch.setattr(committed_log_mod, "ORPHAN_GRACE_S", 0.0)
    nxt = (slow_from + 1) * batch
    assert EventLog(gs_root).append(SOURCE, rows(list(range(slow_from * batch - 3, nxt)),
                                                 spread_days=4),
                                    topic="txns", partition=0) == batch
    assert offsets_in(EventLog(gs_root)) == list(range(nxt))
    on_store = {e.rel for e in store.list_files() if e.rel.startswith("date=")}
    assert on_store == {r for r, _ in EventLog(gs_root).files(SOURCE)}  # orphans deleted


def test_two_writers_racing_on_one_manifest_lose_no_commit(gs_root, monkeypatch):
    """Two writers (partitions 0 and 1), each with its own log object, append 8 batches at
    once: every lost race is redone on the winner's manifest, so all 16 commits survive."""
    conflicts = []
    real = ManifestLog.commit

    def counting(self, manifest):
        try:
            real(self, manifest)
        except CommitConflict:
            conflicts.append(1)
            raise

    monkeypatch.setattr(ManifestLog, "commit", counting)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def writer(partition: int) -> None:
        try:
            log = EventLog(gs_root)
            start.wait()
            for k in range(8):
                log.append(SOURCE, rows(list(range(k * 10, k * 10 + 10)), spread_days=1),
                           topic="txns", partition=partition)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    log = EventLog(gs_root)
    df = log.scan(SOURCE).collect()
    for p in (0, 1):
        assert sorted(df.filter(pl.col("_partition") == p)["_offset"].to_list()) == list(
            range(80))
        assert log.committed_offset(SOURCE, "txns", p) == 79
    assert log.snapshot(SOURCE).generation == 16  # one commit per append, none lost
    print(json.dumps({"conflicts_retried": len(conflicts)}))
