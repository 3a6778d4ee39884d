"""Event log: atomic, idempotent appends; crash replays exactly once; compaction keeps rows."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features import Entity, EventSource
from features.errors import OfflineStoreError, SchemaError
from features.offline.event_log import EventLog

DAY = 86_400_000_000
T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1_000_000)

user = Entity("user", ["user_id"])
SOURCE = EventSource(
    "txns",
    {"user_id": "string", "amount": "float", "ts": "timestamp"},
    timestamp_field="ts",
    entity=user,
)


def rows(offsets: list[int], spread_days: int = 3) -> pa.Table:
    """Events at the given offsets, spread over a few days (so several date partitions)."""
    return pa.table({
        "user_id": [f"u{o % 5}" for o in offsets],
        "amount": [float(o) * 1.5 for o in offsets],
        "ts": pa.array([T0 + (o % spread_days) * DAY + o for o in offsets],
                       pa.timestamp("us", tz="UTC")),
        "_offset": pa.array(offsets, pa.int64()),
        "_ingest_ts": pa.array([T0] * len(offsets), pa.timestamp("us", tz="UTC")),
    })


def offsets_in(log: EventLog, topic: str = "txns") -> list[int]:
    df = log.scan(SOURCE).filter(pl.col("_topic") == topic).collect()
    return sorted(df["_offset"].to_list())


def test_append_writes_hive_partitions_and_watermark(tmp_path):
    log = EventLog(tmp_path)
    assert log.committed_offset(SOURCE, "txns", 0) is None
    assert log.append(SOURCE, rows(list(range(10))), topic="txns", partition=0) == 10
    assert log.committed_offset(SOURCE, "txns", 0) == 9
    dates = sorted(p.name for p in (tmp_path / "events" / "txns").glob("date=*"))
    assert dates == ["date=2026-03-01", "date=2026-03-02", "date=2026-03-03"]
    names = sorted(p.name for p in (tmp_path / "events" / "txns").glob("date=*/*.parquet"))
    assert "txns-0-0-9.parquet" in names
    df = log.scan(SOURCE).collect()
    assert df.height == 10
    assert set(df["_partition"].to_list()) == {0}
    assert df.schema["ts"] == pl.Datetime("us", "UTC")


def test_same_offsets_twice_leave_one_copy(tmp_path):
    log = EventLog(tmp_path)
    log.append(SOURCE, rows(list(range(10))), topic="txns", partition=0)
    assert log.append(SOURCE, rows(list(range(10))), topic="txns", partition=0) == 0
    assert log.append(SOURCE, rows(list(range(5, 15))), topic="txns", partition=0) == 5
    assert offsets_in(log) == list(range(15))


def test_partitions_have_independent_watermarks(tmp_path):
    log = EventLog(tmp_path)
    log.append(SOURCE, rows(list(range(10))), topic="txns", partition=0)
    assert log.append(SOURCE, rows(list(range(3))), topic="txns", partition=1) == 3
    assert log.scan(SOURCE).collect().height == 13


def test_crash_before_manifest_replays_exactly_once(tmp_path, monkeypatch):
    log = EventLog(tmp_path)
    log.append(SOURCE, rows(list(range(10))), topic="txns", partition=0)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash after the data files, before the manifest")

    monkeypatch.setattr(log, "_commit", crash)
    with pytest.raises(KeyboardInterrupt):
        log.append(SOURCE, rows(list(range(10, 20))), topic="txns", partition=0)
    monkeypatch.undo()
    # the data files are on disk, but readers ignore them
    on_disk = list((tmp_path / "events" / "txns").glob("date=*/txns-0-10-19.parquet"))
    assert on_disk
    assert offsets_in(log) == list(range(10))
    assert log.committed_offset(SOURCE, "txns", 0) == 9
    # a restarted writer replays, overlapping and going further: every offset lands once
    log = EventLog(tmp_path)
    log.append(SOURCE, rows(list(range(8, 25))), topic="txns", partition=0)
    assert offsets_in(log) == list(range(25))
    assert not list((tmp_path / "events" / "txns").glob("date=*/txns-0-10-19.parquet"))


def test_no_partial_file_is_visible(tmp_path, monkeypatch):
    """A write that dies mid-file leaves only a temp file, which no reader lists."""
    import features.offline.event_log as mod

    log = EventLog(tmp_path)
    log.append(SOURCE, rows(list(range(4))), topic="txns", partition=0)
    real = mod.pq.write_table

    def half_write(table, where, **kw):
        real(table.slice(0, 1), where, **kw)
        raise OSError("disk full")

    monkeypatch.setattr(mod.pq, "write_table", half_write)
    with pytest.raises(OSError):
        log.append(SOURCE, rows(list(range(4, 8))), topic="txns", partition=0)
    monkeypatch.undo()
    visible = list((tmp_path / "events" / "txns").glob("date=*/*.parquet"))
    assert all(not p.name.startswith(".") for p in visible)
    assert offsets_in(log) == [0, 1, 2, 3]
    assert log.append(SOURCE, rows(list(range(4, 8))), topic="txns", partition=0) == 4
    assert offsets_in(log) == list(range(8))
    assert not list((tmp_path / "events" / "txns").glob("date=*/.*"))


def test_scan_prunes_dates(tmp_path):
    log = EventLog(tmp_path)
    log.append(SOURCE, rows(list(range(30))), topic="txns", partition=0)
    files = log.files(SOURCE, T0 + DAY, T0 + 2 * DAY)
    assert files and all(rel.startswith("date=2026-03-02/") for rel, _ in files)
    df = log.scan(SOURCE, T0 + DAY, T0 + 2 * DAY).collect()
    ts = df["ts"].dt.epoch("us")
    assert df.height == 10 and ts.min() >= T0 + DAY and ts.max() < T0 + 2 * DAY


def test_empty_log_scans_to_the_schema(tmp_path):
    df = EventLog(tmp_path).scan(SOURCE).collect()
    assert df.height == 0
    assert df.columns == ["user_id", "amount", "ts", "_topic", "_partition", "_offset",
                          "_ingest_ts", "_epoch", "_applied_ts"]


def test_missing_column_is_a_schema_error(tmp_path):
    bad = rows([1, 2]).drop_columns(["amount"])
    with pytest.raises(SchemaError, match="amount"):
        EventLog(tmp_path).append(SOURCE, bad, topic="txns", partition=0)


def test_compaction_preserves_rows_and_idempotency(tmp_path):
    log = EventLog(tmp_path, retire_after_s=0)  # merged-away files deleted at once
    for i in range(5):
        log.append(SOURCE, rows(list(range(i * 10, i * 10 + 10))), topic="txns", partition=0)
    before = log.scan(SOURCE).collect().sort("_offset")
    assert len(log.files(SOURCE)) == 15
    removed = log.compact(SOURCE)
    assert removed == 15
    assert len(log.files(SOURCE)) == 3
    assert len(list((tmp_path / "events" / "txns").glob("date=*/*.parquet"))) == 3
    after = log.scan(SOURCE).collect().sort("_offset")
    assert after.equals(before)
    assert log.append(SOURCE, rows(list(range(45, 55))), topic="txns", partition=0) == 5
    assert offsets_in(log) == list(range(55))
    assert log.compact(SOURCE) == 6  # 3 compacted + 3 new small files -> 3 merged
    assert len(log.files(SOURCE)) == 3
    assert offsets_in(log) == list(range(55))


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_import_file_is_idempotent(tmp_path, fmt):
    df = pl.DataFrame({
        "user_id": ["a", "b", "a"],
        "amount": [1.0, 2.5, 3.0],
        "ts": [datetime(2026, 3, 1, 10), datetime(2026, 3, 2, 11), datetime(2026, 3, 2, 12)],
    })
    path = tmp_path / f"events.{fmt}"
    if fmt == "parquet":
        df.write_parquet(path)
    elif fmt == "csv":
        df.write_csv(path)
    else:
        df.write_ndjson(path)
    log = EventLog(tmp_path / "offline")
    assert log.import_file(SOURCE, path) == 3
    assert log.import_file(SOURCE, path) == 0
    got = log.scan(SOURCE).collect().sort("_offset")
    assert got["amount"].to_list() == [1.0, 2.5, 3.0]
    assert got["_offset"].to_list() == [0, 1, 2]
    assert got["_topic"][0].startswith("import.")
    assert got["ts"][0] == datetime(2026, 3, 1, 10, tzinfo=UTC)


def test_import_rejects_wrong_types(tmp_path):
    path = tmp_path / "bad.parquet"
    bad = pl.DataFrame({"user_id": ["a"], "amount": ["lots"], "ts": [datetime(2026, 3, 1)]})
    bad.write_parquet(path)
    with pytest.raises(SchemaError, match="amount"):
        EventLog(tmp_path / "offline").import_file(SOURCE, path)


def test_compaction_retires_files_a_snapshot_still_lists(tmp_path):
    log = EventLog(tmp_path, retire_after_s=0.3)
    for i in range(3):
        log.append(SOURCE, rows(list(range(i * 10, i * 10 + 10))), topic="txns", partition=0)
    old = log.snapshot(SOURCE)
    expected = log.scan(SOURCE, snapshot=old).collect().sort("_offset")
    assert log.compact(SOURCE) == 9
    assert old.generation < log.snapshot(SOURCE).generation
    # the reader of the old snapshot still finds every file it lists
    assert log.scan(SOURCE, snapshot=old).collect().sort("_offset").equals(expected)
    assert log.scan(SOURCE).collect().sort("_offset").equals(expected)
    time.sleep(0.35)
    log.append(SOURCE, rows([30]), topic="txns", partition=0)  # a later commit deletes them
    on_disk = {f"{p.parent.name}/{p.name}"
               for p in (tmp_path / "events" / "txns").glob("date=*/*.parquet")}
    assert on_disk == {rel for rel, _ in log.files(SOURCE)}
    with pytest.raises(FileNotFoundError):
        log.scan(SOURCE, snapshot=old).collect()


def test_begin_epoch_restarts_offsets_without_colliding(tmp_path):
    log = EventLog(tmp_path)
    assert log.current_epoch(SOURCE, "txns", 0) == 0
    assert log.append(SOURCE, rows(list(range(10))), topic="txns", partition=0) == 10
    assert log.append(SOURCE, rows(list(range(5))), topic="txns", partition=1) == 5
    # the topic was recreated: offsets restart at 0
    assert log.append(SOURCE, rows(list(range(4))), topic="txns", partition=0) == 0
    assert log.begin_epoch(SOURCE, "txns", 0, 1) is True
    assert log.begin_epoch(SOURCE, "txns", 0, 1) is False  # idempotent
    assert log.begin_epoch(SOURCE, "txns", 0, 0) is False  # never back
    assert log.current_epoch(SOURCE, "txns", 0) == 1
    assert log.current_epoch(SOURCE, "txns", 1) == 0
    assert log.committed_offset(SOURCE, "txns", 0) is None
    assert log.committed_offset(SOURCE, "txns", 1) == 4  # other partitions untouched
    assert log.epoch_history(SOURCE, "txns", 0) == [(0, 9)]
    assert log.append(SOURCE, rows(list(range(4))), topic="txns", partition=0) == 4
    assert log.append(SOURCE, rows(list(range(6))), topic="txns", partition=0) == 2
    assert log.committed_offset(SOURCE, "txns", 0) == 5
    df = log.scan(SOURCE).filter(pl.col("_partition") == 0).collect()
    got = sorted(zip(df["_epoch"].to_list(), df["_offset"].to_list(), strict=True))
    assert got == [(0, o) for o in range(10)] + [(1, o) for o in range(6)]
    names = [p.name for p in (tmp_path / "events" / "txns").glob("date=*/*.parquet")]
    assert len(names) == len(set(names)) == len(log.files(SOURCE))
    assert any(n.startswith("txns-0-e1-") for n in names)
    # a writer still in the old epoch is refused rather than mixing epochs
    with pytest.raises(OfflineStoreError, match="epoch"):
        log.append(SOURCE, rows([50]), topic="txns", partition=0, epoch=0)
    assert log.append(SOURCE, rows([50]), topic="txns", partition=0, epoch=1) == 1
    # compaction keeps both epochs' rows
    before = log.scan(SOURCE).collect().sort(["_partition", "_epoch", "_offset"])
    assert log.compact(SOURCE) > 0
    assert log.scan(SOURCE).collect().sort(["_partition", "_epoch", "_offset"]).equals(before)
    assert log.begin_epoch(SOURCE, "txns", 0, 3) is True
    assert log.epoch_history(SOURCE, "txns", 0) == [(0, 9), (1, 50)]


def test_files_without_the_epoch_column_read_as_epoch_0(tmp_path):
    """A log written before epochs existed: no _epoch column in its files."""
    log = EventLog(tmp_path)
    log.append(SOURCE, rows(list(range(6))), topic="txns", partition=0)
    for rel, _ in log.files(SOURCE):
        path = tmp_path / "events" / "txns" / rel
        pq.write_table(pq.read_table(path).drop_columns(["_epoch"]), path)
    log.append(SOURCE, rows(list(range(6, 9))), topic="txns", partition=0)  # new files: _epoch
    df = log.scan(SOURCE).collect()
    assert df["_epoch"].to_list() == [0] * 9 and df.schema["_epoch"] == pl.Int32
    assert log.compact(SOURCE) > 0
    assert offsets_in(log) == list(range(9))
    assert log.scan(SOURCE).collect()["_epoch"].to_list() == [0] * 9
