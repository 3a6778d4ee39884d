"""The offline event log: every valid event of a source, as Parquet, exactly once.

Layout under ``root`` (``Settings.offline_dir``)::

    events/<source>/date=YYYY-MM-DD/<topic>-<partition>-<first>-<last>.parquet
    events/<source>/_manifest.json   # committed files (+ rows, bytes) and offset watermarks

Why a manifest: a reader must never see a partial write, and a crash between writing data files
and recording progress must replay without duplicates. Data files are written to a temp name and
renamed; only then is the manifest replaced (temp + rename) under a lock, listing the new files
and advancing the watermark of (topic, partition). Readers read only the files the manifest
lists, so files left behind by a crash are invisible, and the next append of that partition
deletes them. Rows at or below the watermark are dropped, so replays are idempotent.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.definitions import EventSource
from features.errors import OfflineStoreError, SchemaError

TS_TYPE = pa.timestamp("us", tz="UTC")
_ARROW = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": TS_TYPE,
}
META = [("_topic", pa.string()), ("_partition", pa.int32()), ("_offset", pa.int64()),
        ("_ingest_ts", TS_TYPE)]
IMPORT_TOPIC_PREFIX = "import."
_DAY_US = 86_400_000_000


def arrow_schema(source: EventSource) -> pa.Schema:
    """The stored schema: the source's fields in declaration order, then the log columns."""
    fields = [pa.field(k, _ARROW[t]) for k, t in source.schema.items()]
    return pa.schema(fields + [pa.field(n, t) for n, t in META])


def _day(us: int) -> date:
    us = min(max(us, -62_135_596_800_000_000), 253_402_214_400_000_000 - 1)  # years 1..9999
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).date()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_parquet_atomic(table: pa.Table, path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path.stat().st_size


class EventLog:
    """Append-only, hive-partitioned Parquet log of one or more sources' events."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._clean: set[str] = set()  # sources whose crash leftovers this instance removed

    # -- paths and manifest -------------------------------------------------------------------

    def source_dir(self, source: EventSource | str) -> Path:
        name = source if isinstance(source, str) else source.name
        return self.root / "events" / name

    def _manifest_path(self, source: EventSource | str) -> Path:
        return self.source_dir(source) / "_manifest.json"

    def _read_manifest(self, source: EventSource | str) -> dict:
        path = self._manifest_path(source)
        if not path.exists():
            return {"watermarks": {}, "files": {}}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise OfflineStoreError(
                f"event log manifest {path} is corrupt ({e}); restore it from a backup or "
                "delete the source's folder and re-import its events"
            ) from e

    @contextmanager
    def _locked(self, source: EventSource | str) -> Iterator[dict]:
        """Serialise manifest updates between writers (workers of different partitions)."""
        d = self.source_dir(source)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "_manifest.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self._read_manifest(source)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _commit(self, source: EventSource | str, manifest: dict) -> None:
        data = json.dumps(manifest, sort_keys=True, indent=0).encode()
        _write_atomic(self._manifest_path(source), data)

    # -- writing ------------------------------------------------------------------------------

    def committed_offset(self, source: EventSource | str, topic: str, partition: int) -> int | None:
        """Highest offset of (topic, partition) durably in the log, or None if none yet."""
        return self._read_manifest(source)["watermarks"].get(f"{topic}/{partition}")

    def _conform(self, source: EventSource, rows: pa.Table) -> pa.Table:
        schema = arrow_schema(source)
        missing = [n for n in schema.names if n not in rows.column_names
                   and n not in ("_topic", "_partition")]
        if missing:
            raise SchemaError(
                f"events for source {source.name!r} lack columns {missing}; give every schema "
                f"field ({', '.join(source.schema)}) plus _offset and _ingest_ts",
                field=missing[0],
            )
        cols = []
        for f in schema:
            if f.name in ("_topic", "_partition"):
                cols.append(pa.chunked_array([pa.nulls(rows.num_rows, f.type)]))
                continue
            col = rows.column(f.name)
            try:
                if pa.types.is_timestamp(col.type) and col.type.tz is None:
                    col = pc.assume_timezone(col, "UTC")
                cols.append(col.cast(f.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise SchemaError(
                    f"source {source.name!r} column {f.name!r}: cannot read {col.type} as "
                    f"{source.schema.get(f.name, f.type)} ({e}); fix the events' type",
                    field=f.name,
                ) from e
        table = pa.Table.from_arrays(cols, schema=schema)
        for k in (source.timestamp_field, *source.entity.keys, "_offset"):
            if table.column(k).null_count:
                raise SchemaError(
                    f"source {source.name!r}: {table.column(k).null_count} events have a null "
                    f"{k!r}; every event needs its event time, entity key and offset", field=k
                )
        return table

    def append(self, source: EventSource, rows: pa.Table, *, topic: str, partition: int) -> int:
        """Write the events of ``rows`` above the committed watermark; returns rows written.

        ``rows`` has the source's schema columns plus ``_offset`` (Kafka offset, log order) and
        ``_ingest_ts``. Safe to call again with the same or overlapping offsets after a crash.
        """
        return self.append_partitions(source, {partition: rows}, topic=topic)

    def append_partitions(self, source: EventSource, tables: dict[int, pa.Table], *,
                          topic: str) -> int:
        """``append`` for several partitions of one topic under one manifest update (one lock,
        one manifest rewrite and fsync per flush instead of one per partition)."""
        with self._locked(source) as manifest:
            if source.name not in self._clean:  # once per process: orphans come from crashes
                self._remove_orphans(source, set(manifest["files"]))
                self._clean.add(source.name)
            written, files, marks = 0, {}, {}
            try:
                for partition, rows in tables.items():
                    table = self._above_mark(source, rows, manifest, topic, partition)
                    if table is None:
                        continue
                    files.update(self._write_by_date(source, table, f"{topic}-{partition}-"))
                    marks[f"{topic}/{partition}"] = int(pc.max(table.column("_offset")).as_py())
                    written += table.num_rows
                if marks:
                    manifest["files"].update(files)
                    manifest["watermarks"].update(marks)
                    self._commit(source, manifest)
            except BaseException:
                self._clean.discard(source.name)  # our own leftovers: remove them next time
                raise
        return written

    def _above_mark(self, source: EventSource, rows: pa.Table, manifest: dict, topic: str,
                    partition: int) -> pa.Table | None:
        """The rows above the partition's watermark, conformed and in offset order."""
        table = self._conform(source, rows)
        mark = manifest["watermarks"].get(f"{topic}/{partition}")
        if mark is not None:
            table = table.filter(pc.greater(table.column("_offset"), mark))
        if table.num_rows == 0:
            return None
        table = table.set_column(
            schema_index(table, "_topic"), "_topic",
            pa.array([topic] * table.num_rows, pa.string()))
        table = table.set_column(
            schema_index(table, "_partition"), "_partition",
            pa.array([partition] * table.num_rows, pa.int32()))
        table = table.take(pc.sort_indices(table, [("_offset", "ascending")]))
        offsets = table.column("_offset").to_numpy()
        if len(offsets) > 1 and (offsets[1:] == offsets[:-1]).any():
            raise SchemaError(
                f"duplicate offsets in one append to {source.name!r} {topic}/{partition}; "
                "each event needs its own log offset", field="_offset")
        return table

    def _write_by_date(self, source: EventSource, table: pa.Table, prefix: str) -> dict:
        ts = table.column(source.timestamp_field).cast(pa.int64()).to_numpy()
        days = ts // _DAY_US
        out = {}
        for d in sorted(set(days.tolist())):
            part = table.filter(pa.array(days == d))
            offs = part.column("_offset")
            name = f"{prefix}{pc.min(offs).as_py()}-{pc.max(offs).as_py()}.parquet"
            rel = f"date={_day(d * _DAY_US).isoformat()}/{name}"
            size = _write_parquet_atomic(part, self.source_dir(source) / rel)
            out[rel] = {"rows": part.num_rows, "bytes": size}
        return out

    def _remove_orphans(self, source: EventSource, listed: set[str]) -> None:
        """Delete data and temp files a crash left behind. Every write happens under the lock,
        so with the lock held any file the manifest does not list is an orphan."""
        for path in self.source_dir(source).glob("date=*/*"):
            if f"{path.parent.name}/{path.name}" not in listed:
                path.unlink(missing_ok=True)

    # -- reading ------------------------------------------------------------------------------

    def files(
        self, source: EventSource | str, start: int | None = None, end: int | None = None
    ) -> list[tuple[str, int]]:
        """Committed files (path relative to the source folder, bytes) that may hold events
        with ``start <= ts < end``, sorted by path: what a reader reads and fingerprints."""
        manifest = self._read_manifest(source)
        lo = _day(start).isoformat() if start is not None else None
        hi = _day(end - 1).isoformat() if end is not None else None
        out = []
        for rel, info in manifest["files"].items():
            d = rel.split("/", 1)[0].removeprefix("date=")
            if (lo is not None and d < lo) or (hi is not None and d > hi):
                continue
            out.append((rel, int(info["bytes"])))
        return sorted(out)

    def scan(
        self, source: EventSource, start: int | None = None, end: int | None = None
    ) -> pl.LazyFrame:
        """Committed events with ``start <= ts < end`` (µs UTC; None = unbounded).

        Only the date partitions that can hold such events are opened.
        """
        paths = [str(self.source_dir(source) / rel) for rel, _ in self.files(source, start, end)]
        if not paths:
            return pl.LazyFrame(schema=pl.from_arrow(arrow_schema(source).empty_table()).schema)
        lf = pl.scan_parquet(paths, hive_partitioning=False)
        ts = pl.col(source.timestamp_field).dt.epoch("us")
        if start is not None:
            lf = lf.filter(ts >= start)
        if end is not None:
            lf = lf.filter(ts < end)
        return lf

    # -- users' own files ---------------------------------------------------------------------

    def import_file(self, source: EventSource, path: Path | str) -> int:
        """Import events from a Parquet, CSV or JSONL file (no Kafka); returns rows written.

        Rows get ``_offset`` = row order and ``_topic`` = ``import.<content hash>``, so
        importing the same file again writes nothing.
        """
        path = Path(path)
        if not path.exists():
            raise OfflineStoreError(f"no such file {path}; give the path of a .parquet, .csv "
                                    "or .jsonl file of events")
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        df = _read_user_file(source, path)
        ts = source.timestamp_field
        if ts in df.columns and df.schema[ts] == pl.String:
            df = df.with_columns(pl.col(ts).str.to_datetime(time_zone="UTC", time_unit="us"))
        if ts in df.columns and isinstance(df.schema[ts], pl.Datetime):
            tz = df.schema[ts].time_zone
            col = pl.col(ts).dt.convert_time_zone("UTC") if tz else pl.col(ts).dt.replace_time_zone(
                "UTC")
            df = df.with_columns(col.dt.cast_time_unit("us"))
        now = datetime.now(UTC)
        df = df.with_columns(
            pl.int_range(0, pl.len(), dtype=pl.Int64).alias("_offset"),
            pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("_ingest_ts"),
        )
        topic = IMPORT_TOPIC_PREFIX + digest.hexdigest()[:16]
        return self.append(source, df.to_arrow(), topic=topic, partition=0)

    # -- maintenance --------------------------------------------------------------------------

    def compact(self, source: EventSource, min_files: int = 2) -> int:
        """Merge each date partition's files into one; returns the number of files removed.

        The merged file holds the same rows (sorted by log coordinates), so ``scan`` results do
        not change; the watermarks stay, so later appends remain idempotent.
        """
        removed = 0
        with self._locked(source) as manifest:
            by_date: dict[str, list[str]] = {}
            for rel in sorted(manifest["files"]):
                by_date.setdefault(rel.split("/", 1)[0], []).append(rel)
            doomed: list[Path] = []
            for d, rels in by_date.items():
                if len(rels) < min_files:
                    continue
                paths = [self.source_dir(source) / r for r in rels]
                table = pa.concat_tables([pq.read_table(p) for p in paths])
                table = table.take(pc.sort_indices(
                    table, [("_topic", "ascending"), ("_partition", "ascending"),
                            ("_offset", "ascending")]))
                name = "compacted-" + hashlib.sha256("\n".join(rels).encode()).hexdigest()[:16]
                rel = f"{d}/{name}.parquet"
                size = _write_parquet_atomic(table, self.source_dir(source) / rel)
                for r in rels:
                    del manifest["files"][r]
                manifest["files"][rel] = {"rows": table.num_rows, "bytes": size}
                doomed += [p for p, r in zip(paths, rels, strict=True) if r != rel]
            if doomed:
                self._commit(source, manifest)
            for p in doomed:  # after the manifest no longer lists them
                p.unlink(missing_ok=True)
                removed += 1
        return removed


def schema_index(table: pa.Table, name: str) -> int:
    return table.schema.get_field_index(name)


def _read_user_file(source: EventSource, path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix == ".csv":
            return pl.read_csv(path, try_parse_dates=True)
        if suffix in (".jsonl", ".ndjson", ".json"):
            return pl.read_ndjson(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise OfflineStoreError(f"cannot read {path}: {e}") from e
    raise OfflineStoreError(
        f"unsupported file type {suffix!r} for {path}; use .parquet, .csv or .jsonl"
    )
