"""Training sets on Apache Spark: the polars builder, run once per entity-hash partition.

Every feature of a training set depends only on the spine row's own entity: its events and its
batch rows. So spine rows, events and batch rows are all given a partition id
``pmod(xxhash64(entity keys), P)`` (computed by Spark on keys of the same types on every side),
unioned into one DataFrame, and ``groupBy(partition).applyInArrow`` hands each partition's rows to
a Python worker, which runs ``build_training_set`` (the polars builder, its kernels and its
rules: max_future, log order, null fields, ttl, ties) on exactly that partition's spine, events
and batch rows. Results carry the spine's row index and come back in the spine's order.

Events are read by Spark from the files one ``EventLog.snapshot`` lists (never a glob, so files
not yet committed are never seen), pruned to the spine's time range plus the longest window.
Views whose entities differ go through separate passes; request features are computed on the
driver from the joined columns, as the polars builder does.

The fingerprint covers the spine, the features and their view versions, and every partition's
own builder fingerprint (which covers that partition's events by content) in partition order: the
same inputs and partition count give the same fingerprint, but it differs from the polars
engine's, which hashes the events as one sorted whole.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from features.definitions import AnyView, BatchFeatureView, FeatureRepo, FeatureView, parse_ref
from features.errors import OfflineStoreError
from features.offline.event_log import EventLog, arrow_schema, in_time_range
from features.offline.request_columns import request_columns, split_refs
from features.offline.training_set import (
    _POLARS,
    TrainingSet,
    _as_frame,
    _spine_digest,
    _utc_us,
    build_training_set,
    column_name,
)
from features.settings import Settings

_ROW = "__tessera_spark_row"  # the spine row index carried through Spark
_T = "__tessera_spark_t"  # the spine's time in µs UTC, as the builder computes it
_PID = "__tessera_pid"
_KIND = "__tessera_kind"  # 0: spine, 1..: one event source or batch view per kind
_FP = "__tessera_part_fp"
_FRAME_ORDER = "__tessera_file_row"  # a batch file's row order (ties: the later row wins)
_SNAPSHOT_TRIES = 5


def spark_session(master: str | None = None, *, shuffle_partitions: int | None = None,
                  driver_memory: str = "1g", java_options: str = "-XX:+UseSerialGC"
                  ):  # noqa: ANN201 - pyspark is an optional import
    """The active SparkSession, or a new one on ``master`` (default ``local[2]``) set up for
    training sets: session time zone UTC, Arrow on, no UI."""
    SparkSession = _pyspark().sql.SparkSession  # noqa: N806
    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers run this interpreter
    builder = (SparkSession.builder.appName("tessera-training-set")
               .master(master or "local[2]")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.driver.memory", driver_memory)
               # the training set is collected to the driver: it may use all of its memory
               # (the default 1g cap failed at 10M rows x 19 columns)
               .config("spark.driver.maxResultSize", driver_memory)
               .config("spark.driver.extraJavaOptions", java_options)
               .config("spark.executor.extraJavaOptions", java_options))
    if shuffle_partitions:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _pyspark():  # noqa: ANN202
    try:
        import pyspark
        import pyspark.sql
        import pyspark.sql.functions  # noqa: F401
        import pyspark.sql.pandas.types  # noqa: F401
    except ImportError as e:
        raise OfflineStoreError("engine='spark' needs pyspark: pip install 'tessera[spark]' "
                                "(and a Java 17 runtime)") from e
    return pyspark


class _FrameLog:
    """An ``EventLog`` stand-in over one partition's events (already the committed ones, of
    one snapshot): what ``build_training_set`` reads inside a Spark worker."""

    def __init__(self, events: dict[str, pl.DataFrame]) -> None:
        self.events = events

    def snapshot(self, source: object) -> None:
        return None

    def files(self, source: object, start: int | None = None, end: int | None = None, *,
              snapshot: object = None) -> list[tuple[str, int]]:
        return []  # the driver lists the files Spark read

    def scan(self, source, start: int | None = None, end: int | None = None, *,  # noqa: ANN001
             snapshot: object = None) -> pl.LazyFrame:
        """``EventLog.scan``'s contract: events with ``start <= ts < end``."""
        return in_time_range(self.events[source.name].lazy(), source.timestamp_field, start,
                             end)


@dataclass
class _Part:
    """One kind of input rows in the union: the spine, a source's events or a batch file."""

    kind: int
    what: str  # "spine" | "events" | "batch"
    name: str  # source or view name
    columns: list[str]  # unprefixed column names, in order


@dataclass
class _Plan:
    """What every partition needs: shipped to the Spark workers (pickled)."""

    views: list[AnyView]
    refs: list[str]
    timestamp_column: str
    keys: list[str]
    key_types: dict[str, pl.DataType]
    parts: list[_Part]
    out_schema: pa.Schema  # _ROW, feature columns, _FP


def _prefixed(kind: int, col: str) -> str:
    return f"p{kind}__{col}"


def _part_frame(table: pa.Table, kinds: np.ndarray, part: _Part) -> pl.DataFrame:
    rows = table.filter(pa.array(kinds == part.kind))
    return pl.from_arrow(rows.select([_prefixed(part.kind, c) for c in part.columns])).rename(
        {_prefixed(part.kind, c): c for c in part.columns})


def _utc(df: pl.DataFrame, cols: list[str]) -> pl.DataFrame:
    return df.with_columns([pl.col(c).cast(pl.Datetime("us", "UTC")) for c in cols])


def _build_partition(table: pa.Table, plan: _Plan, pid: int) -> pa.Table:
    """The polars builder on one partition's rows; returns (row index, features, fingerprint)."""
    kinds = table.column(_KIND).to_numpy()
    spine_part = plan.parts[0]
    spine = _part_frame(table, kinds, spine_part)
    if spine.height == 0:
        return plan.out_schema.empty_table()
    # rows arrive in shuffle order: sort, so the partition's fingerprint is deterministic
    spine = spine.sort(_ROW).with_columns(
        pl.from_epoch(pl.col(_T), "us").dt.replace_time_zone("UTC").alias(plan.timestamp_column),
        *[pl.col(k).cast(plan.key_types[k]) for k in plan.keys]).drop(_T)
    events: dict[str, pl.DataFrame] = {}
    views = {v.name: v for v in plan.views}
    with tempfile.TemporaryDirectory(prefix="tessera-spark-") as tmp:
        for part in plan.parts[1:]:
            frame = _part_frame(table, kinds, part)
            if part.what == "events":
                src = next(v.source for v in plan.views if isinstance(v, FeatureView)
                           and v.source.name == part.name)
                frame = _utc(frame, [src.timestamp_field, "_ingest_ts"])
                events[part.name] = frame.with_columns(pl.col("_epoch").fill_null(0))
            else:  # a batch view's rows of this partition, in their file's order, under a
                # name that does not depend on the temp folder (the fingerprint lists it)
                rel = f"{part.name}.parquet"
                (Path(tmp) / "batch").mkdir(exist_ok=True)
                frame.sort(_FRAME_ORDER).drop(_FRAME_ORDER).write_parquet(
                    Path(tmp) / "batch" / rel)
                view = copy.copy(views[part.name])
                object.__setattr__(view, "path", rel)
                views[part.name] = view
        built = build_training_set(spine, plan.refs, repo=FeatureRepo(views=views),
                                   settings=Settings(home=Path(tmp)),
                                   event_log=_FrameLog(events),
                                   timestamp_column=plan.timestamp_column)
    cols = [f.name for f in plan.out_schema if f.name != _FP]
    out = built.frame.select(cols).to_arrow()
    fp = [f"{pid}:{built.fingerprint}"] + [None] * (out.num_rows - 1)
    out = out.append_column(_FP, pa.array(fp, pa.string()))
    return out.cast(plan.out_schema)


def _group_views(repo: FeatureRepo, resolved: list[tuple[AnyView, str]], settings: Settings
                 ) -> dict[tuple, list[tuple[AnyView, list[str]]]]:
    """Views by (entity keys, key types): one Spark pass each, since each partitions by its
    own key columns and a hash is only comparable over values of one type."""
    by_view: dict[str, list[str]] = {}
    for view, name in resolved:
        if name not in by_view.setdefault(view.name, []):
            by_view[view.name].append(name)
    groups: dict[tuple, list[tuple[AnyView, list[str]]]] = {}
    for vname, names in by_view.items():
        view = repo.views[vname]
        keys = tuple(view.entity.keys)
        if isinstance(view, FeatureView):
            types = tuple(_POLARS[view.source.schema[k]] for k in keys)
        else:
            schema = pl.scan_parquet(_batch_path(view, settings)).collect_schema()
            types = tuple(schema[k] for k in keys)
        groups.setdefault((keys, types), []).append((view, names))
    return groups


def _batch_path(view: BatchFeatureView, settings: Settings) -> Path:
    path = Path(view.path) if Path(view.path).is_absolute() else settings.home / "batch" / view.path
    if not path.exists():
        raise OfflineStoreError(f"batch view {view.name!r} reads {path}, which does not exist; "
                                "write its Parquet there (relative paths are under "
                                "$TESSERA_HOME/batch/)")
    return path


def _out_schema(group: list[tuple[AnyView, list[str]]], refs: list[str], spine: pl.DataFrame,
                timestamp_column: str, settings: Settings) -> tuple[pa.Schema, dict]:
    """The builder's own column types (polars), and the Arrow schema Spark carries them in: the
    builder runs on one spine row with no events and empty batch files of the real files'
    schemas."""
    views = {}
    events = {}
    with tempfile.TemporaryDirectory(prefix="tessera-spark-") as tmp:
        for view, _ in group:
            if isinstance(view, FeatureView):
                events[view.source.name] = pl.from_arrow(arrow_schema(view.source).empty_table())
                views[view.name] = view
            else:
                path = Path(tmp) / f"{view.name}.parquet"
                pl.scan_parquet(_batch_path(view, settings)).head(0).collect().write_parquet(path)
                views[view.name] = copy.copy(view)
                object.__setattr__(views[view.name], "path", str(path))
        probe = build_training_set(spine.head(1), refs, repo=FeatureRepo(views=views),
                                   settings=Settings(home=Path(tmp)), event_log=_FrameLog(events),
                                   timestamp_column=timestamp_column).frame
    cols = [column_name(v.name, n) for v, ns in group for n in ns]
    table = probe.select(cols).to_arrow()
    fields = [pa.field(_ROW, pa.int64())]
    for f in table.schema:  # Spark's Arrow types: plain strings, µs UTC timestamps
        t = f.type
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            t = pa.string()
        elif pa.types.is_timestamp(t):
            t = pa.timestamp("us", tz="UTC")
        fields.append(pa.field(f.name, t))
    return pa.schema([*fields, pa.field(_FP, pa.string())]), dict(probe.select(cols).schema)


def _arrow_for_spark(df: pl.DataFrame) -> pa.Table:
    table = df.to_arrow(compat_level=pl.CompatLevel.oldest())
    return table.cast(pa.schema([pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type)
                                 else f for f in table.schema]))


def _spark_pass(spark, group: list[tuple[AnyView, list[str]]], spine: pl.DataFrame,  # noqa: ANN001
                t: np.ndarray, timestamp_column: str, log: EventLog, settings: Settings,
                partitions: int, files: list[str]) -> tuple[pl.DataFrame, list[str]]:
    """One entity's views: (feature columns in spine order, partition fingerprints)."""
    ps = _pyspark()
    F = ps.sql.functions  # noqa: N806
    from_arrow_schema = ps.sql.pandas.types.from_arrow_schema
    view0 = group[0][0]
    keys = list(view0.entity.keys)
    refs = [f"{v.name}:{n}" for v, ns in group for n in ns]
    if isinstance(view0, FeatureView):
        key_types = {k: _POLARS[view0.source.schema[k]] for k in keys}
    else:
        schema = pl.scan_parquet(_batch_path(view0, settings)).collect_schema()
        key_types = {k: schema[k] for k in keys}
    try:
        typed = spine.select([pl.col(k).cast(key_types[k]) for k in keys])
    except pl.exceptions.PolarsError as e:
        raise OfflineStoreError(f"spine key columns {keys} cannot be read as "
                                f"{[str(key_types[k]) for k in keys]}: {e}") from e
    spine_cols = [_ROW, _T, *keys]
    parts = [_Part(0, "spine", "spine", spine_cols)]
    frames = []

    def tagged(sdf, part: _Part):  # noqa: ANN001, ANN202
        return sdf.select(
            F.pmod(F.xxhash64(*[F.col(k) for k in keys]), F.lit(partitions)).alias(_PID),
            F.lit(part.kind).alias(_KIND),
            *[F.col(c).alias(_prefixed(part.kind, c)) for c in part.columns])

    spine_tbl = _arrow_for_spark(typed.with_columns(
        pl.Series(_ROW, np.arange(spine.height, dtype=np.int64)),
        pl.Series(_T, t)).select(spine_cols))
    frames.append(tagged(spark.createDataFrame(spine_tbl), parts[0]))
    by_source: dict[str, list[FeatureView]] = {}
    for view, _ in group:
        if isinstance(view, FeatureView):
            by_source.setdefault(view.source.name, []).append(view)
    for views in by_source.values():
        src = views[0].source
        feats = [f for v in views for f in v.features]
        # pruning only (a superset of what the builder folds; it filters exactly)
        lo = int(t.min()) - max(f.window for f in feats) - max(f.hop for f in feats)
        hi = int(t.max())
        fields = sorted({f.field for f in feats if f.field})
        cols = [*keys, src.timestamp_field, "_ingest_ts", "_epoch", "_offset", *fields]
        part = _Part(len(parts), "events", src.name, cols)
        parts.append(part)
        snap = log.snapshot(src)
        rels = log.files(src, lo, hi, snapshot=snap)
        files += [f"events/{src.name}/{rel}:{size}" for rel, size in rels]
        schema = arrow_schema(src)
        pruned = pa.schema([schema.field(c) for c in cols])
        if not rels:
            sdf = spark.createDataFrame(_arrow_for_spark(pl.from_arrow(pruned.empty_table())))
        else:
            root = log.source_dir(src)
            sdf = (spark.read.schema(from_arrow_schema(pruned))
                   .parquet(*[str(root / rel) for rel, _ in rels])
                   .where((F.col(src.timestamp_field) >= F.timestamp_micros(F.lit(lo)))
                          & (F.col(src.timestamp_field) < F.timestamp_micros(F.lit(hi)))))
        frames.append(tagged(sdf, part))
    for view, names in group:
        if not isinstance(view, BatchFeatureView):
            continue
        path = _batch_path(view, settings)
        files.append(f"batch/{view.path}:{path.stat().st_size}")
        cols = [*keys, view.timestamp_field, *names]
        part = _Part(len(parts), "batch", view.name, [*cols, _FRAME_ORDER])
        parts.append(part)
        sdf = (spark.read.parquet(str(path))
               .select(*cols, F.col("_metadata.row_index").alias(_FRAME_ORDER)))
        frames.append(tagged(sdf, part))
    out_schema, dtypes = _out_schema(group, refs, spine.select(timestamp_column, *keys),
                                     timestamp_column, settings)
    plan = _Plan([v for v, _ in group], refs, timestamp_column, keys, key_types, parts,
                 out_schema)
    union = frames[0]
    for f in frames[1:]:
        union = union.unionByName(f, allowMissingColumns=True)

    def run(key, table):  # noqa: ANN001, ANN202 - no hints: pyspark infers the UDF type from them
        return _build_partition(table, plan, int(key[0].as_py()))

    result = (union.groupBy(_PID)
              .applyInArrow(run, from_arrow_schema(out_schema))
              .toArrow())
    got = pl.from_arrow(result).sort(_ROW)
    if got.height != spine.height or not (got[_ROW].to_numpy()
                                          == np.arange(spine.height)).all():
        raise OfflineStoreError(f"the Spark run returned {got.height} rows for a spine of "
                                f"{spine.height}; every spine row must come back once")
    fps = sorted(got[_FP].drop_nulls().to_list(), key=lambda s: int(s.split(":", 1)[0]))
    return got.drop(_ROW, _FP).cast(dtypes), fps


def _vanished(e: Exception) -> bool:
    """Spark's ways of saying a listed file was gone (a compaction's grace period ran out)."""
    text = str(e)
    return not isinstance(e, OfflineStoreError) and any(
        s in text for s in ("FileNotFoundException", "PATH_NOT_FOUND"))


def _pass_retried(spark, group, spine, t, timestamp_column, log, settings, partitions,  # noqa: ANN001
                  files) -> tuple[pl.DataFrame, list[str]]:  # noqa: ANN001
    """``_spark_pass``; if a file of its snapshot vanished under Spark, again from a fresh
    snapshot (as the polars builder rereads a source)."""
    for attempt in range(_SNAPSHOT_TRIES):
        listed = len(files)
        try:
            return _spark_pass(spark, group, spine, t, timestamp_column, log, settings,
                               partitions, files)
        except Exception as e:
            if attempt == _SNAPSHOT_TRIES - 1 or not _vanished(e):
                raise
            del files[listed:]
    raise AssertionError("unreachable")


def build_training_set_spark(
    spine: object,
    features: list[str],
    *,
    repo: FeatureRepo | None = None,
    settings: Settings | None = None,
    event_log: EventLog | None = None,
    timestamp_column: str = "ts",
    master: str | None = None,
    spark: object = None,
    partitions: int | None = None,
) -> TrainingSet:
    """``build_training_set`` computed on Spark: same columns, values and row order.

    ``spark``: a SparkSession to use (default: the active one, or a new one on ``master``);
    ``partitions``: entity-hash partitions (default ``spark.sql.shuffle.partitions``).
    """
    settings = settings or Settings.from_env()
    if repo is None:
        from features.registry import load_repo

        repo = load_repo(settings)
    log = event_log or EventLog(settings.offline_dir)
    if not log.store.local:
        raise OfflineStoreError(f"engine='spark' reads the event log's files by path; the log "
                                f"at {log.store.uri} is not on a file system (use the polars "
                                "engine for object-store logs)")
    df = _as_frame(spine)
    if timestamp_column in df.columns and df[timestamp_column].null_count():
        # the builder's own check and message
        build_training_set(df.filter(pl.col(timestamp_column).is_null()), features, repo=repo,
                           settings=settings, event_log=log, timestamp_column=timestamp_column)
    # every other check (columns, references, types, clashes) and the output layout: the
    # polars builder on no rows
    layout = build_training_set(df.head(0), features, repo=repo, settings=settings,
                                event_log=log, timestamp_column=timestamp_column)
    if df.height == 0:
        return layout
    stored, requested, inputs = split_refs(repo, list(features))
    t = df.select(_utc_us(pl.col(timestamp_column), df.schema[timestamp_column],
                          f"spine column {timestamp_column!r}")).to_series().to_numpy()
    t = t.astype(np.int64)
    spark = spark or spark_session(master)
    partitions = partitions or int(spark.conf.get("spark.sql.shuffle.partitions"))
    files: list[str] = []
    columns: dict[str, pl.Series] = {}
    part_fps: list[str] = []
    for group in _group_views(repo, repo.resolve(stored + inputs), settings).values():
        got, fps = _pass_retried(spark, group, df, t, timestamp_column, log, settings,
                                 partitions, files)
        columns.update({c: got[c] for c in got.columns})
        part_fps += fps
    columns.update(request_columns(repo, requested, df, columns))
    new = [c for c in layout.frame.columns if c not in df.columns]
    out = df.with_columns([columns[c] for c in new])
    h = hashlib.sha256(b"engine=spark\n")
    h.update(_spine_digest(df).encode())
    h.update(json.dumps({"features": list(features), "timestamp_column": timestamp_column,
                         "partitions": partitions,
                         "versions": {v: repo.views[v].version for v in sorted(
                             {parse_ref(r)[0] for r in stored + inputs})},
                         "request_versions": {v: repo.requests[v].version for v in sorted(
                             {parse_ref(r)[0] for r in requested})}},
                        sort_keys=True).encode())
    for fp in part_fps:
        h.update(fp.encode() + b"\n")
    return TrainingSet(out, h.hexdigest(), files)
