"""The commit protocol on a local disk: the same compare-and-swap as on S3 (a stale manifest is
refused, a lost race redone), and an update that changes nothing commits nothing."""

from __future__ import annotations

import pytest

from features.offline.committed_log import CommitConflict, ManifestLog
from features.offline.event_log import EventLog
from features.offline.storage import StorageError, Store
from tests.features.offline.test_event_log import SOURCE, rows


def test_local_compare_and_swap_refuses_a_stale_manifest(tmp_path):
    log = ManifestLog(Store(tmp_path), defaults={"files": {}})
    stale = log.read()
    assert stale.version is None and stale == {"files": {}}
    log.update(lambda m, a: m["files"].update({"a": 1}))
    stale["files"]["b"] = 1
    with pytest.raises(CommitConflict, match="changed since generation 0"):
        log.commit(stale)
    assert log.read()["files"] == {"a": 1} and log.read()["generation"] == 1


def test_no_op_updates_commit_nothing(tmp_path):
    log = EventLog(tmp_path)
    assert log.begin_epoch(SOURCE, "txns", 0, 0) is False  # not higher than 0: a no-op
    assert not (tmp_path / "events" / "txns" / "_manifest.json").exists()
    log.append(SOURCE, rows([1, 2]), topic="txns", partition=0)
    gen = log.snapshot(SOURCE).generation
    assert log.append(SOURCE, rows([1, 2]), topic="txns", partition=0) == 0  # a replay
    assert log.snapshot(SOURCE).generation == gen


def test_a_store_without_conditional_puts_refuses_to_commit():
    store = Store("mock:///bucket/prefix")  # pyarrow's in-memory filesystem: no conditional put
    store.write_bytes("data", b"x")
    assert store.read_bytes("data") == b"x"
    with pytest.raises(StorageError, match="no conditional put"):
        store.put_if("_manifest.json", b"{}", None)


def test_a_swap_whose_answer_is_lost_keeps_the_data_it_committed(tmp_path):
    """The manifest PUT lands, then the connection drops before its answer: the error reaches
    the caller, and the files the landed manifest lists are still there to read."""
    store = Store(tmp_path)
    log = ManifestLog(store, defaults={"files": {}})

    def write(manifest, attempt):
        attempt.write_bytes("part-1.bin", b"rows")
        manifest["files"]["part-1.bin"] = 4

    def lands_then_fails(manifest):
        log.commit(manifest)
        raise OSError("connection reset after the PUT was sent")

    with pytest.raises(OSError, match="connection reset"):
        log.update(write, commit=lands_then_fails)
    assert log.read()["files"] == {"part-1.bin": 4}
    assert store.read_bytes("part-1.bin") == b"rows"


def test_a_failing_change_leaves_no_files(tmp_path):
    store = Store(tmp_path)
    log = ManifestLog(store, defaults={"files": {}})

    def write_then_fail(manifest, attempt):
        attempt.write_bytes("part-1.bin", b"rows")
        raise ValueError("bad rows")

    with pytest.raises(ValueError, match="bad rows"):
        log.update(write_then_fail)
    assert not store.exists("part-1.bin") and log.read()["files"] == {}
