"""Kafka topic -> Parquet files, exactly once in effect, on a local disk or an object store.

Each flush writes one file per partition named by its offset range
(``p0003-000000001200-000000001999.parquet``; plus a random suffix on an object store), then
commits ``_manifest.json``, which lists the files and the next offset per partition, through
the event log's commit protocol (``features.offline.committed_log``: fsync + rename under a lock
on disk, a conditional put on S3, redone on the new manifest if another writer, e.g.
``import_frame``, committed first). The manifest is the commit: readers only read listed files,
and a restarted sink deletes unlisted files (left by a crash between the file and the manifest)
and seeks to the manifest's offsets. A crash therefore replays, and the replay rewrites the same
records under the manifest's control: no loss, no duplicates. No consumer group is used, so
there is no group join to wait for and no second commit to keep in step with the files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
from kafka import KafkaConsumer, TopicPartition

from features.kafka_config import KafkaSecurity, kafka_python
from features.offline.committed_log import (
    Attempt,
    Manifest,
    ManifestLog,
    remove_orphans,
    unique_name,
)
from features.offline.storage import Store

MANIFEST = "_manifest.json"
_EMPTY = {"topic": None, "next_offsets": {}, "files": []}


class ParquetSink:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        folder: Path | str,
        schema: pa.Schema,
        flush_records: int = 50_000,
        flush_s: float = 1.0,
        normalize: Callable[[dict], dict | None] | None = None,
        security: KafkaSecurity | None = None,
    ) -> None:
        self.topic = topic
        self.normalize = normalize
        self.store = Store(folder)
        self.folder = Path(self.store.root) if self.store.local else folder
        self._log = ManifestLog(self.store, MANIFEST, defaults=_EMPTY)
        self.schema = schema
        self.flush_records = flush_records
        self.flush_s = flush_s
        self.bad_records = 0
        with self.store.lock(MANIFEST):  # on disk, an import_frame in flight holds it
            self._manifest = load_manifest(self.store)
            self._clean_orphans()
        self._consumer = KafkaConsumer(
            **kafka_python(security),
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"tessera-sink-{topic}",
            max_poll_records=10_000,
            fetch_max_bytes=32 * 1024 * 1024,
        )
        parts = self._partitions()
        tps = [TopicPartition(topic, p) for p in parts]
        self._consumer.assign(tps)
        for tp in tps:
            self._consumer.seek(tp, self._manifest["next_offsets"].get(str(tp.partition), 0))
        self._buffer: dict[int, list[tuple[int, list[dict]]]] = {}
        self._buffered = 0
        self._last_flush = time.monotonic()

    def _partitions(self) -> list[int]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self._consumer.topics()  # refreshes metadata
            parts = self._consumer.partitions_for_topic(self.topic)
            if parts:
                return sorted(parts)
            time.sleep(0.1)
        raise RuntimeError(f"topic {self.topic!r} not found; create it first")

    def _clean_orphans(self) -> None:
        """Delete files no manifest lists (on an object store only old ones: a younger one
        may be an ``import_frame`` about to commit)."""
        remove_orphans(self.store, [e for e in self.store.list_files(recursive=False)
                                    if e.rel.endswith((".tmp", ".parquet"))],
                       set(self._manifest["files"]))

    def poll(self, timeout_ms: int = 200) -> int:
        """Fetch once and flush if due; returns how many records were fetched.

        A message holds one JSON object or a JSON array of them; anything else, and any row that
        ``normalize`` rejects or that does not fit the schema, is counted in ``bad_records`` and
        skipped (its offset still advances).
        """
        got = 0
        for tp, msgs in self._consumer.poll(timeout_ms=timeout_ms).items():
            buf = self._buffer.setdefault(tp.partition, [])
            for m in msgs:
                try:
                    value = orjson.loads(m.value)
                except orjson.JSONDecodeError:
                    value = None
                rows = value if isinstance(value, list) else [value]
                good = [r for r in rows if isinstance(r, dict)]
                if self.normalize is not None:
                    good = [n for n in map(self.normalize, good) if n is not None]
                self.bad_records += len(rows) - len(good)
                buf.append((m.offset, good))
                got += len(good)
        self._buffered += got
        if self._buffer and (
            self._buffered >= self.flush_records
            or time.monotonic() - self._last_flush >= self.flush_s
        ):
            self.flush()
        return got

    def flush(self) -> None:
        """Write buffered records, then commit them through the manifest."""
        tables = {}
        for part, rows in sorted(self._buffer.items()):
            good = [r for _, batch in rows for r in batch]
            tables[part] = (rows[0][0], rows[-1][0], self._table(good) if good else None)

        def change(manifest: Manifest, attempt: Attempt) -> None:
            manifest["topic"] = self.topic
            for part, (first, last, table) in tables.items():
                if manifest["next_offsets"].get(str(part), 0) > last:
                    continue  # already committed (cannot happen with one sink per folder)
                if table is not None:
                    name = unique_name(self.store,
                                       f"p{part:04d}-{first:012d}-{last:012d}.parquet")
                    attempt.write_parquet(name, table)
                    manifest["files"].append(name)
                manifest["next_offsets"][str(part)] = last + 1

        self._log.update(change, commit=self._commit)
        self._manifest = load_manifest(self.store)
        self._buffer = {}
        self._buffered = 0
        self._last_flush = time.monotonic()

    def _table(self, rows: list[dict]) -> pa.Table:
        try:
            return pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # find and count the rows that don't fit
            ok = []
            for r in rows:
                try:
                    pa.Table.from_pylist([r], schema=self.schema)
                    ok.append(r)
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    self.bad_records += 1
            return pa.Table.from_pylist(ok, schema=self.schema)

    def _commit(self, manifest: Manifest) -> None:
        self._log.commit(manifest)

    def run(self, idle_s: float = 2.0, stop_after: int | None = None) -> int:
        """Consume until ``idle_s`` passes with nothing new (or ``stop_after`` records)."""
        total = 0
        idle_since = time.monotonic()
        while True:
            n = self.poll()
            total += n
            if n:
                idle_since = time.monotonic()
            if stop_after is not None and total >= stop_after:
                break
            if time.monotonic() - idle_since >= idle_s:
                break
        if self._buffer:
            self.flush()
        return total

    def close(self) -> None:
        if self._buffer:
            self.flush()
        self._consumer.close()


def _store(folder: Path | str | Store) -> Store:
    return folder if isinstance(folder, Store) else Store(folder)


def load_manifest(folder: Path | str | Store) -> dict:
    return dict(ManifestLog(_store(folder), MANIFEST, defaults=_EMPTY).read())


def import_frame(folder: Path | str, frame: pl.DataFrame) -> str:
    """Commit rows that did not come through Kafka (a backfill, a benchmark, a test) as one more
    file in the manifest; returns its name. Offsets are untouched, and the commit is redone on
    the newest manifest if a running sink committed first, so neither loses the other's
    files."""
    store = _store(folder)
    table = frame.to_arrow()

    def change(manifest: Manifest, attempt: Attempt) -> str:
        files = manifest["files"]
        name = unique_name(store, f"import-{len(files):06d}-{time.time_ns()}.parquet")
        attempt.write_parquet(name, table)
        files.append(name)
        return name

    return ManifestLog(store, MANIFEST, defaults=_EMPTY).update(change)


def read_dataset(
    folder: Path | str, schema: pa.Schema, columns: list[str] | None = None
) -> pl.DataFrame:
    """Every committed row (files listed in the manifest), as one polars frame."""
    store = _store(folder)
    files = [store.path(f) for f in load_manifest(store)["files"]]
    if not files:
        empty = pl.from_arrow(schema.empty_table())
        return empty.select(columns) if columns else empty
    if store.local:
        lf = pl.scan_parquet(files)
    else:
        lf = pl.scan_pyarrow_dataset(pads.dataset(files, format="parquet", filesystem=store.fs))
    return (lf.select(columns) if columns else lf).collect()
