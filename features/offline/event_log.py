"""The offline event log: every valid event of a source, as Parquet, exactly once.

Layout under ``root`` (``Settings.offline_location``: a folder, or an ``s3://``/``gs://`` URI)::

    events/<source>/date=YYYY-MM-DD/<topic>-<partition>-<first>-<last>.parquet
    events/<source>/_manifest.json   # committed files (+ rows, bytes) and offset watermarks

Why a manifest: a reader must never see a partial write, and a crash between writing data files
and recording progress must replay without duplicates. The commit is ``committed_log``'s: data
files first (temp + rename on disk; one immutable, uniquely named object on an object store),
then the manifest is swapped (under an flock on disk; a conditional put on S3/GCS, retried on a new
manifest when another writer won), listing the new files and advancing the watermark of (topic,
partition). Readers read only the files the manifest lists, so files left behind by a crash are
invisible, and a later append deletes them (on an object store only once they are older than
``committed_log.ORPHAN_GRACE_S``, since another writer's not-yet-committed files look the
same). Rows at or
below the watermark are dropped, so replays are idempotent.

Readers work from one ``Snapshot`` (one manifest read). Compaction therefore does not delete the
files it merged: it *retires* them (the manifest stops listing them) and deletes them only once
``retire_after_s`` has passed, so a reader that took its snapshot before the swap still finds
every file it lists.

Epochs: Kafka offsets restart at 0 when a topic is recreated or a broker loses data. The worker
then calls ``begin_epoch``; the partition's watermark restarts and every row records the
epoch it was written in (``_epoch``), so offsets are unique per (topic, partition, epoch).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq  # noqa: F401  (tests patch pq.write_table to fail mid-file)

from features.definitions import EventSource
from features.errors import OfflineStoreError, SchemaError
from features.offline.committed_log import (
    Attempt,
    Manifest,
    ManifestLog,
    remove_orphans,
    rewrite_without,
    unique_name,
)
from features.offline.storage import Store

TS_TYPE = pa.timestamp("us", tz="UTC")
_ARROW = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": TS_TYPE,
}
META = [("_topic", pa.string()), ("_partition", pa.int32()), ("_offset", pa.int64()),
        ("_ingest_ts", TS_TYPE), ("_epoch", pa.int32()), ("_applied_ts", TS_TYPE)]
_FILLED = ("_topic", "_partition", "_epoch")  # set by the log, not taken from the caller
_OPTIONAL = ("_applied_ts",)  # null when the writer did not record it (imports, older logs)
RETIRE_AFTER_S = 600.0
IMPORT_TOPIC_PREFIX = "import."
_DAY_US = 86_400_000_000
_EMPTY = {"watermarks": {}, "files": {}, "epochs": {}, "epoch_history": {}, "retired": {},
          "removed": {}, "generation": 0}


def arrow_schema(source: EventSource) -> pa.Schema:
    """The stored schema: the source's fields in declaration order, then the log columns."""
    fields = [pa.field(k, _ARROW[t]) for k, t in source.schema.items()]
    return pa.schema(fields + [pa.field(n, t) for n, t in META])


def in_time_range(lf: pl.LazyFrame, timestamp_field: str, start: int | None,
                  end: int | None) -> pl.LazyFrame:
    """Rows with ``start <= ts < end`` (µs UTC; None = unbounded): ``EventLog.scan``'s range
    contract, in one place so that every reader of events (the Spark engine's per-partition
    log too) cuts a window's edges the same way."""
    ts = pl.col(timestamp_field).dt.epoch("us")
    if start is not None:
        lf = lf.filter(ts >= start)
    if end is not None:
        lf = lf.filter(ts < end)
    return lf


def _day(us: int) -> date:
    us = min(max(us, -62_135_596_800_000_000), 253_402_214_400_000_000 - 1)  # years 1..9999
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).date()


@dataclass(frozen=True)
class Snapshot:
    """One read of a source's manifest: the files committed at that moment and the log's
    progress. A reader lists and opens files of one snapshot only, so what it fingerprints is
    what it reads, even while a compaction swaps files."""

    source: str
    generation: int
    files: dict  # rel path -> {"rows", "bytes"}
    watermarks: dict  # "topic/partition" -> highest offset of the current epoch
    epochs: dict  # "topic/partition" -> current epoch (absent = 0)


def _read_table(store: Store, rel: str) -> pa.Table:
    """A committed file; files written before epochs existed read as epoch 0."""
    table = store.read_table(rel)
    if "_epoch" not in table.column_names:
        table = table.append_column("_epoch", pa.array([0] * table.num_rows, pa.int32()))
    if "_applied_ts" not in table.column_names:  # written before it was recorded
        table = table.append_column("_applied_ts", pa.nulls(table.num_rows, TS_TYPE))
    meta = [n for n, _ in META]  # in META's order, whichever were appended
    return table.select([n for n in table.column_names if n not in meta] + meta)


class EventLog:
    """Append-only, hive-partitioned Parquet log of one or more sources' events.

    ``root``: a folder, or an object-store URI (``s3://bucket/prefix``; see
    ``features.offline.storage`` for endpoints and credentials).
    ``retire_after_s``: how long files merged away by ``compact`` stay on disk for readers of
    older snapshots (0 = delete at once).
    """

    def __init__(self, root: Path | str, *, retire_after_s: float = RETIRE_AFTER_S) -> None:
        self.store = Store(root)
        self.root: Path | str = Path(self.store.root) if self.store.local else str(root)
        self.retire_after_s = retire_after_s
        self._clean: set[str] = set()  # sources whose crash leftovers this instance removed

    # -- paths and manifest -------------------------------------------------------------------

    def source_dir(self, source: EventSource | str) -> Path:
        """The source's folder on a local disk (``source_store`` works on any storage)."""
        if not self.store.local:
            raise OfflineStoreError(
                f"the event log at {self.store.uri} is not on a local disk; read its files "
                "with scan()/scan_file() instead of paths")
        return Path(self.source_store(source).root)

    def source_store(self, source: EventSource | str) -> Store:
        name = source if isinstance(source, str) else source.name
        return self.store.child(f"events/{name}")

    def _log(self, source: EventSource | str) -> ManifestLog:
        return ManifestLog(self.source_store(source), "_manifest.json", defaults=_EMPTY,
                           lock_rel="_manifest")  # _manifest.lock, as older versions lock

    def _read_manifest(self, source: EventSource | str) -> Manifest:
        return self._log(source).read()

    def _update(self, source: EventSource | str, change: Callable[[Manifest, Attempt], int]
                ) -> int:
        """Apply ``change`` to the manifest and commit it (retried if another writer won)."""
        return self._log(source).update(change, commit=lambda m: self._commit(source, m))

    def _commit(self, source: EventSource | str, manifest: Manifest) -> None:
        """The atomic step: until this swap, nothing a writer did is visible."""
        self._log(source).commit(manifest)

    def snapshot(self, source: EventSource | str) -> Snapshot:
        """The committed state of ``source`` now; pass it to ``files``/``scan``."""
        m = self._read_manifest(source)
        name = source if isinstance(source, str) else source.name
        return Snapshot(name, int(m["generation"]), m["files"], m["watermarks"], m["epochs"])

    # -- epochs -------------------------------------------------------------------------------

    def current_epoch(self, source: EventSource | str, topic: str, partition: int) -> int:
        """The epoch new rows of (topic, partition) are written in; 0 until ``begin_epoch``."""
        return int(self._read_manifest(source)["epochs"].get(f"{topic}/{partition}", 0))

    def begin_epoch(self, source: EventSource | str, topic: str, partition: int,
                    epoch: int) -> bool:
        """Start ``epoch`` for (topic, partition) if the current one is lower; returns whether
        anything changed (calling it again is a no-op).

        The old epoch's last offset goes to the partition's epoch history and its watermark is
        reset, so offsets from 0 are accepted again. Rows already written keep their epoch.
        """
        key = f"{topic}/{partition}"

        def change(manifest: Manifest, attempt: Attempt) -> int:
            current = int(manifest["epochs"].get(key, 0))
            if epoch <= current:
                return 0
            manifest["epoch_history"].setdefault(key, []).append(
                {"epoch": current, "last_offset": manifest["watermarks"].pop(key, None)})
            manifest["epochs"][key] = int(epoch)
            return 1

        return bool(self._update(source, change))

    def epoch_history(self, source: EventSource | str, topic: str,
                      partition: int) -> list[tuple[int, int | None]]:
        """Closed epochs of (topic, partition) as (epoch, last offset written in it or None)."""
        hist = self._read_manifest(source)["epoch_history"].get(f"{topic}/{partition}", [])
        return [(int(h["epoch"]), h["last_offset"]) for h in hist]

    # -- writing ------------------------------------------------------------------------------

    def committed_offset(self, source: EventSource | str, topic: str, partition: int) -> int | None:
        """Highest offset of (topic, partition) durably in the log in the current epoch, or
        None if none yet."""
        return self._read_manifest(source)["watermarks"].get(f"{topic}/{partition}")

    def _conform(self, source: EventSource, rows: pa.Table) -> pa.Table:
        schema = arrow_schema(source)
        missing = [n for n in schema.names
                   if n not in rows.column_names and n not in _FILLED + _OPTIONAL]
        if missing:
            raise SchemaError(
                f"events for source {source.name!r} lack columns {missing}; give every schema "
                f"field ({', '.join(source.schema)}) plus _offset and _ingest_ts",
                field=missing[0],
            )
        cols = []
        for f in schema:
            if f.name in _FILLED or f.name not in rows.column_names:
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

    def append(self, source: EventSource, rows: pa.Table, *, topic: str, partition: int,
               epoch: int | None = None) -> int:
        """Write the events of ``rows`` above the committed watermark; returns rows written.

        ``rows`` has the source's schema columns plus ``_offset`` (Kafka offset, log order) and
        ``_ingest_ts``. Safe to call again with the same or overlapping offsets after a crash.
        ``epoch``, if given, must be the partition's current epoch (a writer still in an older
        epoch gets an ``OfflineStoreError`` instead of writing old offsets into the new one).
        """
        epochs = None if epoch is None else {partition: epoch}
        return self.append_partitions(source, {partition: rows}, topic=topic, epochs=epochs)

    def append_partitions(self, source: EventSource, tables: dict[int, pa.Table], *,
                          topic: str, epochs: dict[int, int] | None = None) -> int:
        """``append`` for several partitions of one topic under one manifest update (one lock,
        one manifest rewrite and fsync per flush instead of one per partition)."""

        def change(manifest: Manifest, attempt: Attempt) -> int:
            if source.name not in self._clean:  # once per process: orphans come from crashes
                self._remove_orphans(source, set(manifest["files"]) | set(manifest["retired"]))
                self._clean.add(source.name)
            written, files, marks = 0, {}, {}
            try:
                for partition, rows in tables.items():
                    epoch = int(manifest["epochs"].get(f"{topic}/{partition}", 0))
                    if epochs is not None and partition in epochs and epochs[partition] != epoch:
                        raise OfflineStoreError(
                            f"{source.name!r} {topic}/{partition} is in epoch {epoch}, not "
                            f"{epochs[partition]}; call begin_epoch first (or drop the stale "
                            "writer's events)")
                    table = self._above_mark(source, rows, manifest, topic, partition, epoch)
                    if table is None:
                        continue
                    prefix = f"{topic}-{partition}-" + (f"e{epoch}-" if epoch else "")
                    files.update(self._write_by_date(source, table, prefix, attempt))
                    marks[f"{topic}/{partition}"] = int(pc.max(table.column("_offset")).as_py())
                    written += table.num_rows
                if marks:
                    manifest["files"].update(files)
                    manifest["watermarks"].update(marks)
                    attempt.delete_after.extend(self._expire_retired(manifest))
            except BaseException:
                self._clean.discard(source.name)  # our own leftovers: remove them next time
                raise
            return written

        try:
            return self._update(source, change)
        except BaseException:
            self._clean.discard(source.name)
            raise

    def _above_mark(self, source: EventSource, rows: pa.Table, manifest: dict, topic: str,
                    partition: int, epoch: int) -> pa.Table | None:
        """The rows above the partition's watermark, conformed and in offset order."""
        table = self._conform(source, rows)
        mark = manifest["watermarks"].get(f"{topic}/{partition}")
        if mark is not None:
            table = table.filter(pc.greater(table.column("_offset"), mark))
        if table.num_rows == 0:
            return None
        n = table.num_rows
        for name, value, typ in (("_topic", topic, pa.string()),
                                 ("_partition", partition, pa.int32()),
                                 ("_epoch", epoch, pa.int32())):
            table = table.set_column(schema_index(table, name), name, pa.array([value] * n, typ))
        table = table.take(pc.sort_indices(table, [("_offset", "ascending")]))
        offsets = table.column("_offset").to_numpy()
        if len(offsets) > 1 and (offsets[1:] == offsets[:-1]).any():
            raise SchemaError(
                f"duplicate offsets in one append to {source.name!r} {topic}/{partition}; "
                "each event needs its own log offset", field="_offset")
        return table

    def _write_by_date(self, source: EventSource, table: pa.Table, prefix: str,
                       attempt: Attempt) -> dict:
        ts = table.column(source.timestamp_field).cast(pa.int64()).to_numpy()
        days = ts // _DAY_US
        out = {}
        for d in sorted(set(days.tolist())):
            part = table.filter(pa.array(days == d))
            offs = part.column("_offset")
            name = unique_name(self.store,
                               f"{prefix}{pc.min(offs).as_py()}-{pc.max(offs).as_py()}.parquet")
            rel = f"date={_day(d * _DAY_US).isoformat()}/{name}"
            size = attempt.write_parquet(rel, part)
            out[rel] = {"rows": part.num_rows, "bytes": size}
        return out

    def _remove_orphans(self, source: EventSource, listed: set[str]) -> None:
        """Delete data and temp files a crash left behind. On a local disk every write happens
        under the lock, so with the lock held any file the manifest does not list (or keep as
        retired) is an orphan; on an object store only old enough ones are (the others may be
        another writer's, about to be committed)."""
        store = self.source_store(source)
        remove_orphans(store, [e for e in store.list_files() if e.rel.startswith("date=") or (
            e.rel.startswith("._manifest.json.") and e.rel.endswith(".tmp"))], listed)

    def _expire_retired(self, manifest: dict) -> list[str]:
        """Drop retired files older than the grace period from the manifest; returns them, to
        delete once the manifest without them is committed."""
        now = time.time()
        gone = [rel for rel, info in manifest["retired"].items()
                if now - float(info["at"]) >= self.retire_after_s]
        for rel in gone:
            del manifest["retired"][rel]
        return gone

    # -- reading ------------------------------------------------------------------------------

    def files(
        self, source: EventSource | str, start: int | None = None, end: int | None = None, *,
        snapshot: Snapshot | None = None,
    ) -> list[tuple[str, int]]:
        """Committed files (path relative to the source folder, bytes) that may hold events
        with ``start <= ts < end``, sorted by path: what a reader of ``snapshot`` (default: a
        fresh one) reads."""
        snap = snapshot or self.snapshot(source)
        lo = _day(start).isoformat() if start is not None else None
        hi = _day(end - 1).isoformat() if end is not None else None
        out = []
        for rel, info in snap.files.items():
            d = rel.split("/", 1)[0].removeprefix("date=")
            if (lo is not None and d < lo) or (hi is not None and d > hi):
                continue
            out.append((rel, int(info["bytes"])))
        return sorted(out)

    def scan(
        self, source: EventSource, start: int | None = None, end: int | None = None, *,
        snapshot: Snapshot | None = None,
    ) -> pl.LazyFrame:
        """Committed events with ``start <= ts < end`` (µs UTC; None = unbounded), of every
        epoch (``_epoch`` is 0 for rows written before epochs existed).

        Only the date partitions that can hold such events are opened. Collect it soon:
        files of an old snapshot are deleted ``retire_after_s`` after a compaction (a
        ``FileNotFoundError`` then: take a new snapshot and scan again).
        """
        rels = self.files(source, start, end, snapshot=snapshot)
        schema = pl.from_arrow(arrow_schema(source).empty_table()).schema
        if not rels:
            return pl.LazyFrame(schema=schema)
        store = self.source_store(source)
        paths = [store.path(rel) for rel, _ in rels]
        if store.local:
            lf = pl.scan_parquet(paths, hive_partitioning=False, schema=schema,
                                 missing_columns="insert")
        else:  # through pyarrow.fs: the same endpoint and credentials as the writers
            dataset = pads.dataset(paths, schema=arrow_schema(source), format="parquet",
                                   filesystem=store.fs)
            lf = pl.scan_pyarrow_dataset(dataset)
        lf = lf.with_columns(pl.col("_epoch").fill_null(0))
        return in_time_range(lf, source.timestamp_field, start, end)

    def scan_file(self, source: EventSource | str, rel: str) -> pl.LazyFrame:
        """One committed file (a ``files`` path), on any storage."""
        store = self.source_store(source)
        if store.local:
            return pl.scan_parquet(store.path(rel))
        return pl.from_arrow(store.read_table(rel)).lazy()

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
        """Merge each date partition's files into one; returns the number of files merged away.

        The merged file holds the same rows (sorted by log coordinates), so ``scan`` results do
        not change; the watermarks stay, so later appends remain idempotent. The merged-away
        files are retired, not deleted: readers of an older snapshot can still open them until
        ``retire_after_s`` has passed (then a later compaction or append deletes them).
        ``min_files=1`` rewrites partitions that already are one file.
        """
        def change(manifest: Manifest, attempt: Attempt) -> int:
            removed = 0
            by_date: dict[str, list[str]] = {}
            for rel in sorted(manifest["files"]):
                by_date.setdefault(rel.split("/", 1)[0], []).append(rel)
            gen = int(manifest["generation"]) + 1  # the generation this commit creates
            now = time.time()
            for d, rels in by_date.items():
                if len(rels) < min_files:
                    continue
                store = self.source_store(source)
                table = pa.concat_tables([_read_table(store, r) for r in rels])
                table = table.select(arrow_schema(source).names)
                table = table.take(pc.sort_indices(
                    table, [("_topic", "ascending"), ("_partition", "ascending"),
                            ("_epoch", "ascending"), ("_offset", "ascending")]))
                digest = hashlib.sha256("\n".join(rels).encode()).hexdigest()[:16]
                rel = f"{d}/" + unique_name(self.store, f"compacted-g{gen}-{digest}.parquet")
                size = attempt.write_parquet(rel, table)
                for r in rels:
                    del manifest["files"][r]
                    manifest["retired"][r] = {"at": now, "generation": gen}
                manifest["files"][rel] = {"rows": table.num_rows, "bytes": size}
                removed += len(rels)
            # deleted after the manifest no longer names them; no change, no commit
            attempt.delete_after.extend(self._expire_retired(manifest))
            return removed

        return self._update(source, change)

    def remove_rows(self, source: EventSource, drop: Callable[[pa.Table], pa.Array]
                    ) -> Removal:
        """Delete every committed row for which ``drop(table)`` (a boolean array) is true, e.g.
        one entity's events (``features.offline.forget``).

        Each file holding such rows is rewritten without them under a new name and the manifest
        is swapped once for all of them, so a reader, or a crash, sees the old snapshot or the
        new one, never half. The replaced files are deleted right after the swap instead of
        retired, and retired files of earlier compactions holding such rows are deleted too:
        the rows must not outlive the call (a reader of an older snapshot reads again from a
        new one, as after a compaction's grace period). Orphans of crashed writes go as in
        ``append``. The watermarks stay, so replaying the same offsets does not write the rows
        again; their log coordinates are kept in the manifest's ``removed`` (topic/partition/
        epoch -> offsets, nothing else of the row) so the completeness audit can count them as
        written rather than lost."""
        def change(manifest: Manifest, attempt: Attempt) -> Removal:
            self._remove_orphans(source, set(manifest["files"]) | set(manifest["retired"]))
            store = self.source_store(source)
            gen = int(manifest["generation"]) + 1
            rows = files = retired = 0
            removed: dict[str, set[int]] = {}
            for rel in sorted(manifest["files"]):
                table = _read_table(store, rel)
                mask = drop(table)
                if not pc.any(mask).as_py():
                    continue
                for key, offs in _coordinates(table.filter(mask)).items():
                    removed.setdefault(key, set()).update(offs)
                digest = hashlib.sha256(rel.encode()).hexdigest()[:16]
                new_rel = (rel.split("/", 1)[0] + "/"
                           + unique_name(self.store, f"forget-g{gen}-{digest}.parquet"))
                n, info = rewrite_without(attempt, table, mask, new_rel)
                del manifest["files"][rel]
                if info is not None:
                    manifest["files"][new_rel] = info
                attempt.delete_after.append(rel)
                rows += n
                files += 1
            for rel in sorted(manifest["retired"]):
                try:
                    hit = pc.any(drop(_read_table(store, rel))).as_py()
                except FileNotFoundError:
                    hit = True  # already gone: stop listing it
                if hit:
                    del manifest["retired"][rel]
                    attempt.delete_after.append(rel)
                    retired += 1
            for key, offs in removed.items():
                manifest["removed"][key] = sorted(set(manifest["removed"].get(key, ())) | offs)
            changed = bool(files or retired)
            return Removal(rows, files, retired, gen if changed else int(manifest["generation"]))

        return self._update(source, change)

    def removed_offsets(self, source: EventSource | str, topic: str, partition: int,
                        epoch: int) -> list[int]:
        """Offsets of (topic, partition, epoch) whose rows ``remove_rows`` deleted."""
        removed = self._read_manifest(source)["removed"]
        return list(removed.get(f"{topic}/{partition}/{epoch}", []))


def _coordinates(table: pa.Table) -> dict[str, list[int]]:
    """``topic/partition/epoch`` -> offsets of the rows of ``table``."""
    out: dict[str, list[int]] = {}
    cols = [table.column(n).to_pylist() for n in ("_topic", "_partition", "_epoch", "_offset")]
    for topic, partition, epoch, offset in zip(*cols, strict=True):
        out.setdefault(f"{topic}/{partition}/{epoch or 0}", []).append(int(offset))
    return out


@dataclass(frozen=True)
class Removal:
    """What ``EventLog.remove_rows`` did: rows deleted, files rewritten or dropped, files of
    older snapshots deleted, and the generation of the snapshot without the rows."""

    rows: int
    files: int
    retired_deleted: int
    generation: int


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
