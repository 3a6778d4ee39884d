"""The event log on real S3- and GCS-protocol servers (moto's and fake-gcs-server, from
``tests/conftest.py``): same rows and training sets as on a local disk, a writer killed
mid-flush leaves nothing half-visible, racing writers lose no commit (the conditional put,
If-Match or ``ifGenerationMatch``, decides), and a stale manifest loses with a clear error."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import polars as pl
import pytest

import features.offline.committed_log as committed_log_mod
from features.offline.committed_log import CommitConflict, ManifestLog
from features.offline.event_log import EventLog
from features.offline.storage import Store
from features.offline.training_set import training_set
from features.settings import Settings
from tests.features.offline.test_event_log import SOURCE, offsets_in, rows
from tests.features.offline.test_training_set import REPO, VIEW, _append, _events, _spine

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _bucket(request, scheme: str) -> tuple[str, str]:
    return request.getfixturevalue("gcs_bucket" if scheme == "gs" else "s3_bucket")


@pytest.fixture(params=["s3", "gs"])
def root(request) -> str:
    _, bucket = _bucket(request, request.param)
    return f"{request.param}://{bucket}/{uuid.uuid4().hex[:8]}/offline"


@pytest.fixture(params=["s3", "gs"])
def endpoint_roots(request, monkeypatch) -> tuple[str, str]:
    """(a root naming its server in the URI, one naming a dead port), each spelled as that
    store's pyarrow filesystem reads it, with the variable that would otherwise point the
    clients at the server unset. The dead GCS one gives up after a second, not the default
    15 minutes of retries."""
    url, bucket = _bucket(request, request.param)
    prefix = uuid.uuid4().hex[:8]
    if request.param == "s3":
        monkeypatch.delenv("AWS_ENDPOINT_URL")
        return (f"s3://{bucket}/{prefix}?endpoint_override={url}",
                f"s3://{bucket}/x?endpoint_override=http://127.0.0.1:9")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    host = url.split("://", 1)[1]
    return (f"gs://anonymous@{bucket}/{prefix}?endpoint_override={host}&scheme=http",
            f"gs://anonymous@{bucket}/x?endpoint_override=127.0.0.1:9&scheme=http"
            "&retry_limit_seconds=1")


def test_round_trip_and_training_set_equal_local_disk(root, tmp_path):
    rng = random.Random(7)
    events = _events(rng, 300)
    spine = _spine(rng, 80)
    local, remote = EventLog(tmp_path / "offline"), EventLog(root)
    for log in (local, remote):
        _append(log, events[:200])
        _append(log, events[150:])  # an overlapping replay writes nothing twice
    src = VIEW.source
    assert remote.committed_offset(src, "buys", 0) == 299
    cols = ["user_id", "shop", "amount", "ts", "_offset", "_epoch"]
    a = local.scan(src).collect().select(cols).sort("_offset")
    b = remote.scan(src).collect().select(cols).sort("_offset")
    assert b.height == 300 and a.equals(b)
    assert {r for r, _ in remote.files(src)} and all(  # a date partition each, as on disk
        r.startswith("date=") for r, _ in remote.files(src))
    refs = [f"pair_stats:{f.name}" for f in VIEW.features]
    settings = Settings(tmp_path)
    want = training_set(spine, refs, repo=REPO, settings=settings, event_log=local)
    got = training_set(spine, refs, repo=REPO, settings=settings, event_log=remote)
    assert got.height == spine.height and got.equals(want)
    # compaction on the object store: same rows, fewer files
    before = remote.files(src)
    dates = {r.split("/")[0] for r, _ in before}
    assert len(before) > len(dates) and remote.compact(src) == len(before)
    assert {r.split("/")[0] for r, _ in remote.files(src)} == dates
    assert len(remote.files(src)) == len(dates)
    assert remote.scan(src).collect().select(cols).sort("_offset").equals(a)


def test_settings_offline_uri_points_the_log_at_the_bucket(root, tmp_path):
    settings = Settings(tmp_path, offline_uri=root)
    assert settings.offline_location == root
    log = EventLog(settings.offline_location)
    log.append(SOURCE, rows(list(range(5))), topic="txns", partition=0)
    assert offsets_in(EventLog(root)) == list(range(5))
    assert not (tmp_path / "offline").exists()  # nothing on the local disk
    with pytest.raises(Exception, match="not on a local disk"):
        log.source_dir(SOURCE)


CHILD = textwrap.dedent('''
    import sys, time
    import numpy as np
    from features.event_columns import EventColumns
    from features.offline.committed_log import ManifestLog
    from features.offline.event_log import EventLog
    from streams.worker.offline_sink import OfflineWriter
    from tests.features.offline.test_event_log import SOURCE, T0
    root, batch, slow_from = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    real_commit, k = ManifestLog.commit, 0

    def commit(self, manifest):  # flush slow_from lingers between its data and its manifest
        if k >= slow_from:
            print("wrote", k, flush=True)
            time.sleep(5)
        real_commit(self, manifest)

    ManifestLog.commit = commit
    writer = OfflineWriter(EventLog(root), SOURCE)  # the worker's offline sink
    while True:
        offs = np.arange(k * batch, (k + 1) * batch, dtype=np.int64)
        writer.add(0, EventColumns(offs, {  # four days: four data objects, then the manifest
            "user_id": [f"u{o % 5}" for o in offs.tolist()],
            "amount": offs.astype(np.float64) * 1.5,
            "ts": T0 + (offs % 4) * 86_400_000_000 + offs,
        }))
        writer.write(writer.take())
        print("committed", k, flush=True)
        k += 1
''')


def test_kill_9_mid_flush_leaves_every_committed_batch_exactly_once(root, monkeypatch):
    """The worker's offline sink in a child process (the server's variables inherited),
    killed after writing a flush's data objects and before its manifest swap."""
    batch, slow_from = 25, 3
    proc = subprocess.Popen([sys.executable, "-c", CHILD, root, str(batch), str(slow_from)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    seen = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the writer died before its fourth flush"
            seen.append(line.split())
            if seen[-1][0] == "wrote":  # its data objects are in, its manifest is not
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert seen[-1] == ["wrote", str(slow_from)]
    assert [int(k) for what, k in seen if what == "committed"] == list(range(slow_from))
    log = EventLog(root)
    offsets = offsets_in(log)
    committed = slow_from
    assert offsets == list(range(committed * batch))  # each exactly once, nothing half
    assert log.committed_offset(SOURCE, "txns", 0) == committed * batch - 1
    store = log.source_store(SOURCE)
    listed = {r for r, _ in log.files(SOURCE)}
    on_store = {e.rel for e in store.list_files() if e.rel.startswith("date=")}
    assert listed <= on_store and len(on_store - listed) == 4  # the killed flush's 4 dates
    # a restarted writer resumes after the watermark; once orphans are past their grace
    # period (0 here), it deletes the objects the killed flush left unlisted
    monkeypatch.setattr(committed_log_mod, "ORPHAN_GRACE_S", 0.0)
    nxt = list(range(committed * batch, (committed + 1) * batch))
    assert EventLog(root).append(SOURCE, rows(list(range(committed * batch - 3, nxt[-1] + 1)),
                                                 spread_days=4),
                                    topic="txns", partition=0) == batch
    assert offsets_in(EventLog(root)) == list(range((committed + 1) * batch))
    on_store = {e.rel for e in store.list_files() if e.rel.startswith("date=")}
    assert on_store == {r for r, _ in EventLog(root).files(SOURCE)}


def test_two_writers_racing_on_one_manifest_lose_no_commit(root, monkeypatch):
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
            log = EventLog(root)
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
    log = EventLog(root)
    df = log.scan(SOURCE).collect()
    for p in (0, 1):
        assert sorted(df.filter(pl.col("_partition") == p)["_offset"].to_list()) == list(
            range(80))
        assert log.committed_offset(SOURCE, "txns", p) == 79
    assert log.snapshot(SOURCE).generation == 16  # one commit per append, none lost
    print(json.dumps({"conflicts_retried": len(conflicts)}))


def test_a_stale_manifest_loses_with_a_clear_error(root):
    """The race made deterministic: a writer whose manifest is stale cannot overwrite a
    newer one; update() redoes the change on the new manifest instead, deleting the lost
    attempt's data object."""
    store = Store(root)
    log = ManifestLog(store, "m/_manifest.json")
    stale = log.read()
    log.update(lambda m, a: m.setdefault("files", {}).update({"a": 1}))
    stale["files"] = {"b": 1}
    with pytest.raises(CommitConflict, match="changed since generation 0"):
        log.commit(stale)
    calls = []

    def change(m, attempt):
        calls.append(1)
        attempt.write_bytes(f"m/data-{len(calls)}", b"x")
        if len(calls) == 1:  # another writer commits between our read and our swap
            ManifestLog(store, "m/_manifest.json").update(
                lambda m2, _: m2["files"].update({"c": 1}))
        m["files"]["d"] = 1

    log.update(change)
    assert len(calls) == 2
    assert log.read()["files"] == {"a": 1, "c": 1, "d": 1}
    assert not store.exists("m/data-1") and store.exists("m/data-2")  # the loser's is gone
    one_try = ManifestLog(store, "m/_manifest.json", attempts=1)

    def always_raced(m, attempt):
        ManifestLog(store, "m/_manifest.json").update(
            lambda m2, _: m2["files"].update({str(time.time_ns()): 1}))
        m["files"]["e"] = 1

    with pytest.raises(CommitConflict, match="lost the race"):
        one_try.update(always_raced)


def test_endpoint_in_the_uri_and_an_unreachable_store_is_an_oserror(endpoint_roots):
    """Without the server's variable, the URI's ``endpoint_override`` reaches the server
    (pyarrow and the conditional put alike); a store that cannot be reached raises OSError,
    which the worker's offline writer retries with backoff as it does a full disk."""
    root, dead_root = endpoint_roots
    log = EventLog(root)
    log.append(SOURCE, rows(list(range(6))), topic="txns", partition=0)
    assert offsets_in(EventLog(root)) == list(range(6))
    with pytest.raises(OSError, match="(S3|GCS) GET"):
        EventLog(dead_root).append(SOURCE, rows([1]), topic="txns", partition=0)
