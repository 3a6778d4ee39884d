"""OfflineWriter under real I/O faults: writes fail with EFBIG (RLIMIT_FSIZE, a full disk for
one process, works as root too, where a read-only chmod would not stop us), are retried with
backoff, and once the fault clears every row lands exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl

from features.offline.event_log import EventLog
from tests.features.offline.test_event_log import SOURCE, rows

CHILD = textwrap.dedent('''
    import json, resource, signal, sys, threading, time
    import numpy as np
    from features.event_columns import EventColumns
    from features.offline.event_log import EventLog
    from streams.worker.offline_sink import OfflineWriter
    from tests.features.offline.test_event_log import SOURCE, T0

    root, limit, first, count, fault_s = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:5]), \\
        float(sys.argv[5])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    offsets = np.arange(first, first + count, dtype=np.int64)
    events = EventColumns(offsets, {
        "user_id": [f"u{o % 5}" for o in offsets.tolist()],
        "amount": offsets.astype(np.float64) * 1.5,
        "ts": T0 + (offsets % 3) * 86_400_000_000 + offsets,
    })
    log = EventLog(root)
    commit_failures, unlisted = [], []
    real_commit = log._commit

    def observed_commit(source, manifest):  # where did the fault hit? (observation only)
        try:
            real_commit(source, manifest)
        except OSError:
            commit_failures.append(1)
            d = log.source_dir(source)
            listed = set(EventLog(root).snapshot(source).files)
            unlisted.append(sum(f"{p.parent.name}/{p.name}" not in listed
                                for p in d.glob("date=*/*.parquet")))
            raise

    log._commit = observed_commit
    writer = OfflineWriter(log, SOURCE, backoff=(0.05, 0.3))
    writer.add(0, events.take(np.arange(0, count, 2)))
    writer.add(1, events.take(np.arange(1, count, 2)))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    def clear():
        time.sleep(fault_s)
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # the disk has room again

    threading.Thread(target=clear, daemon=True).start()
    t0 = time.monotonic()
    n = writer.write(writer.take())
    print(json.dumps({"written": n, "failures": writer.write_failures,
                      "seconds": time.monotonic() - t0, "commit_failures": len(commit_failures),
                      "unlisted": unlisted}))
''')


def _run_faulty_write(root: Path, limit: int, first: int, count: int) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), str(limit), str(first),
                           str(count), "1.0"], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _offsets(log: EventLog, partition: int) -> list[int]:
    df = log.scan(SOURCE).filter(pl.col("_partition") == partition).collect()
    return sorted(df["_offset"].to_list())


def _no_leftovers(root: Path) -> None:
    d = root / "events" / SOURCE.name
    on_disk = {f"{p.parent.name}/{p.name}" for p in d.glob("date=*/*")}
    assert on_disk == {rel for rel, _ in EventLog(root).files(SOURCE)}
    assert not list(d.glob(".*.tmp"))


def test_data_file_writes_fail_then_every_row_lands_once(tmp_path):
    out, err = _run_faulty_write(tmp_path, limit=200, first=0, count=40)  # no file fits
    assert out["failures"] >= 2 and out["written"] == 40 and out["seconds"] >= 0.9
    assert out["commit_failures"] == 0  # it failed writing the data files
    assert "event log write of 40 txns rows failed" in err and "retry" in err
    log = EventLog(tmp_path)
    assert _offsets(log, 0) == list(range(0, 40, 2))
    assert _offsets(log, 1) == list(range(1, 40, 2))
    assert log.committed_offset(SOURCE, "txns", 0) == 38
    _no_leftovers(tmp_path)


def test_manifest_commit_fails_after_the_data_files_then_lands_once(tmp_path):
    """Data files fit, the (large) manifest does not: the files were written but never
    listed, so no reader saw them, and the retry writes each row once."""
    log = EventLog(tmp_path)
    for o in range(160):  # many small files: a manifest far larger than one data file
        log.append(SOURCE, rows([o], spread_days=1), topic="txns", partition=0)
    d = tmp_path / "events" / SOURCE.name
    manifest = (d / "_manifest.json").stat().st_size
    biggest = max(p.stat().st_size for p in d.glob("date=*/*.parquet"))
    assert manifest > 2 * biggest + 2000
    out, err = _run_faulty_write(tmp_path, limit=biggest + 1500, first=160, count=12)
    assert out["failures"] >= 2 and out["written"] == 12
    assert out["commit_failures"] == out["failures"]  # every failure at the manifest commit
    assert all(n >= 2 for n in out["unlisted"])  # both partitions' files written, not listed
    assert "retry" in err
    log = EventLog(tmp_path)
    assert _offsets(log, 0) == list(range(160)) + list(range(160, 172, 2))
    assert _offsets(log, 1) == list(range(161, 172, 2))
    _no_leftovers(tmp_path)
