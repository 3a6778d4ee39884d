"""Point-in-time training sets: each spine row gets every feature's value at its timestamp.

Windowed views are folded from the raw event log with ``semantics.ranges`` (the same window
contract as the online path); batch views are as-of joined (latest row with
``timestamp <= t`` and ``t - timestamp < ttl``, else null). Output columns are named
``view__feature`` (a ``:`` breaks many downstream tools). Work goes view by view and reads only
the needed columns and the time range ``[min t - longest window - hop, max t)``, once, as numbers
(entity code, time, log position, fields); the sort, window bounds and folds then run one entity
partition at a time (``features.offline.partitions``; ``Settings.training_partition_rows`` rows
each, one partition for small inputs), with the same kernels and the same result, so memory
follows the spine and those numbers, not the whole log nor the sort of it.

The result carries a fingerprint: sha256 over the spine's content, the requested features and
their view versions, the content of the events that were folded (per source: the row count and
a hash of the rows in their sorted order) and every batch file read with its size. It does not
depend on how the log lays its events out in files, so a compaction leaves it unchanged.
``write_training_set`` stores it in the Parquet key-value metadata; the same inputs give the
same bytes.

Timelines: ``timeline="corrected"`` (the default) counts an event as soon as its event time has
passed, the event-time truth; ``timeline="served"`` counts it only once the online store had
applied it (the event log's ``_applied_ts``; late events never), so each row holds what a read
of the online store at its time returned (``features.offline.served``). Batch views are as-of
joined in both.

Each source is read from one ``EventLog.snapshot``; if a file of that snapshot vanished (a
compaction's grace period ran out mid-read), the source is read again from a fresh snapshot.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from features.definitions import (
    AnyView,
    BatchFeatureView,
    EventSource,
    FeatureRepo,
    FeatureView,
    parse_ref,
)
from features.errors import OfflineStoreError
from features.offline.entity_codes import MISMATCH, codes, with_codes
from features.offline.event_log import EventLog
from features.offline.partitions import ContentDigest, entity_bounds, split_rows, take
from features.offline.request_columns import request_columns, split_refs
from features.offline.served import (
    APPLIED,
    FALLBACK,
    LATE_ONLY,
    TIMELINES,
    applied_columns,
    served_ranges,
    settle,
)
from features.semantics.ranges import aggregate, asof_positions, window_bounds
from features.settings import Settings

FINGERPRINT_KEY = b"tessera.fingerprint"
_T = "__tessera_t"
_CODE = "__tessera_code"
_ROW = "__tessera_row"
_SNAPSHOT_TRIES = 5
_POLARS = {"string": pl.String, "int": pl.Int64, "float": pl.Float64, "bool": pl.Boolean,
           "timestamp": pl.Datetime("us", "UTC")}


def column_name(view: str, feature: str) -> str:
    """Output column of feature ``view:feature`` in a training set."""
    return f"{view}__{feature}"


@dataclass
class TrainingSet:
    frame: pl.DataFrame
    fingerprint: str
    files: list[str] = field(default_factory=list)  # what was read, "path:bytes"


def _utc_us(expr: pl.Expr, dtype: pl.DataType, what: str) -> pl.Expr:
    """Datetime (tz-aware: converted; naive: taken as UTC) or Date -> int64 µs since epoch."""
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone:
            expr = expr.dt.convert_time_zone("UTC")
        return expr.dt.epoch("us")
    if dtype == pl.Date:
        return expr.cast(pl.Datetime("us")).dt.epoch("us")
    raise OfflineStoreError(f"{what} has type {dtype}; it must be a datetime (tz-aware or naive "
                            "UTC) or a date")


def _as_frame(spine: object) -> pl.DataFrame:
    if isinstance(spine, pl.DataFrame):
        return spine
    if isinstance(spine, pl.LazyFrame):
        return spine.collect()
    if isinstance(spine, str | Path):
        p = Path(spine)
        if not p.exists():
            raise OfflineStoreError(f"spine file {p} does not exist")
        return pl.read_csv(p, try_parse_dates=True) if p.suffix == ".csv" else pl.read_parquet(p)
    if isinstance(spine, pa.Table):
        return pl.from_arrow(spine)
    try:
        return pl.from_pandas(spine)
    except Exception as e:  # noqa: BLE001 - anything else is not a table we understand
        raise OfflineStoreError(f"spine must be a polars/pandas DataFrame, a pyarrow Table or a "
                                f"Parquet/CSV path, got {type(spine).__name__}") from e


def _check_keys(spine: pl.DataFrame, view: AnyView) -> None:
    missing = [k for k in view.entity.keys if k not in spine.columns]
    if missing:
        raise OfflineStoreError(
            f"spine lacks entity key column(s) {missing} needed by view {view.name!r} "
            f"(entity {view.entity.name!r}); spine columns: {', '.join(spine.columns)}"
        )


def _typed_keys(spine: pl.DataFrame, keys: tuple[str, ...], types: dict) -> pl.DataFrame:
    try:
        return spine.select([pl.col(k).cast(types[k]) for k in keys])
    except pl.exceptions.PolarsError as e:
        raise OfflineStoreError(f"spine key columns {list(keys)} cannot be read as "
                                f"{[str(types[k]) for k in keys]}: {e}") from e


def _codes(spine: pl.DataFrame, keys: tuple[str, ...], types: dict, cache: dict | None = None
           ) -> tuple[pl.DataFrame, np.ndarray]:
    """Dense int codes for the spine's distinct entity keys: (code table, code per spine row).
    Rows whose key has a null get a code no event has (``features.offline.entity_codes``).
    ``cache``: one build's codes by keys and types (views of one entity share them)."""
    key = (tuple(keys), tuple(str(types[k]) for k in keys))
    if cache is not None and key in cache:
        return cache[key]
    got = codes(_typed_keys(spine, keys, types))
    if cache is not None:
        cache[key] = got
    return got


def _collect_coded(lf: pl.LazyFrame, uniq: pl.DataFrame, keys: tuple[str, ...],
                   select: list[pl.Expr]) -> pl.DataFrame:
    """``lf``'s rows of the spine's entities with their code, then ``select``: joined on the
    keys' hash, or on the keys themselves if a hash collision showed (streaming engine: it
    reads and joins in batches)."""
    for exact in (False, True):
        df = (with_codes(lf, uniq, keys, exact).select(*select, pl.col(MISMATCH))
              .collect(engine="streaming"))
        if not df[MISMATCH].any():
            return df.drop(MISMATCH)
    raise AssertionError("unreachable: an exact join has no mismatch")


def _query_order(q_code: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spine rows in (code, t) order: one composite int64 key when it fits (polars' parallel
    arg_sort of it is ~6x cheaper than numpy's lexsort of two keys)."""
    if len(t) == 0:
        return np.zeros(0, dtype=np.int64)
    tmin, span = int(t.min()), int(t.max()) - int(t.min()) + 1
    if (int(q_code.max()) + 1) * span < 2**62:
        key = q_code * span + (t - tmin)
        return pl.Series(key).arg_sort().to_numpy().astype(np.int64)
    return np.lexsort((t, q_code))


def _sorted_by_entity_time(df: pl.DataFrame, tiebreak: str | list[str]) -> pl.DataFrame:
    """Sort by (code, time, tiebreak); one composite int64 key when it fits (2-3x faster)."""
    if df.height == 0:
        return df
    tmin, tmax = df[_T].min(), df[_T].max()
    span = tmax - tmin + 1
    tiebreak = [tiebreak] if isinstance(tiebreak, str) else tiebreak
    if (df[_CODE].max() + 1) * span < 2**62:
        return df.sort([pl.col(_CODE) * span + (pl.col(_T) - tmin), *tiebreak])
    return df.sort([_CODE, _T, *tiebreak])


def _read_events(log: EventLog, src: EventSource, start: int, end: int, columns: list[str],
                 uniq: pl.DataFrame, fields: list[str], served: bool = False
                 ) -> tuple[pl.DataFrame, list[tuple]]:
    """The source's events of the spine's entities in ``[start, end)`` from one snapshot; a
    file that vanished under it (deleted after a compaction's grace period) means: read again
    from a fresh snapshot."""
    keys = src.entity.keys
    for attempt in range(_SNAPSHOT_TRIES):
        snap = log.snapshot(src)
        try:
            ev = (
                log.scan(src, start, end, snapshot=snap)
                # the stream's rule for clocks that run ahead (EventSource.max_future): an
                # event stamped further ahead of when it was received never counts
                .filter(pl.col(src.timestamp_field)
                        <= pl.col("_ingest_ts") + pl.duration(microseconds=src.max_future_us))
                .select([*columns, *(applied_columns() if served else [])])
            )
            ev = _collect_coded(ev, uniq, tuple(keys), [
                pl.col(_CODE), pl.col(src.timestamp_field).dt.epoch("us").alias(_T),
                pl.col("_epoch"), pl.col("_offset"), *[pl.col(f).cast(pl.Float64) for f in fields],
                *([pl.col(APPLIED), pl.col(FALLBACK)] if served else [])])
        except FileNotFoundError:
            if attempt == _SNAPSHOT_TRIES - 1:
                raise
            continue
        return ev, log.files(src, start, end, snapshot=snap)
    raise AssertionError("unreachable")


def _windowed(views: list[tuple[FeatureView, list[str]]], spine: pl.DataFrame, t: np.ndarray,
              log: EventLog, files: list[str], content: list[str],
              timeline: str = "corrected", max_rows: int = 0, cache: dict | None = None
              ) -> dict[str, pl.Series]:
    """Features of the windowed views of one source: one scan, then per entity partition
    (``features.offline.partitions``; one when the input is small) a sort and numpy folds."""
    served = timeline != "corrected"  # served, or its late rule alone (LATE_ONLY)
    src = views[0][0].source
    keys = src.entity.keys
    feats = [(view, view.feature(n)) for view, names in views for n in names]
    start = int(t.min()) - max(f.window for _, f in feats) - max(f.hop for _, f in feats)
    end = int(t.max())
    uniq, q_code = _codes(spine, keys, {k: _POLARS[src.schema[k]] for k in keys}, cache)
    # fold the queries in (code, t) order: searches and range reductions then walk memory
    # forward; results go back to spine order at the end
    qorder = _query_order(q_code, t)
    q_code, q_t = q_code[qorder], t[qorder]
    fields = sorted({f.field for _, f in feats if f.aggregation.needs_field and f.field})
    ev, read = _read_events(log, src, start, end,
                            [*keys, src.timestamp_field, "_epoch", "_offset", *fields], uniq,
                            fields, served)
    if served:
        ev = settle(ev, src.name, end, _T, timeline == LATE_ONLY)
    files += [f"events/{src.name}/{rel}:{size}" for rel, size in read]
    ev_code = ev[_CODE].to_numpy()
    bounds = entity_bounds([ev_code, q_code], uniq.height, max_rows)
    q_at = np.searchsorted(q_code, bounds)  # partition k's queries: q_at[k]:q_at[k + 1]
    digest = ContentDigest()
    values: dict[str, np.ndarray] = {}
    valid: dict[str, np.ndarray] = {}
    for k, rows in enumerate(split_rows(ev_code, bounds)):
        # log order within an entity: epoch, then offset (offsets restart in a new epoch)
        part = _sorted_by_entity_time(take(ev, rows), ["_epoch", "_offset"])
        digest.update(part)
        at = qorder[q_at[k]:q_at[k + 1]]
        folded = _fold(feats, fields, part, q_code[q_at[k]:q_at[k + 1]],
                       q_t[q_at[k]:q_at[k + 1]], served)
        for col, (vals, ok) in folded.items():
            if col not in values:
                values[col] = np.empty(len(t), dtype=vals.dtype)
                valid[col] = np.empty(len(t), dtype=bool)
            values[col][at], valid[col][at] = vals, ok
        del part, folded  # before the next partition's rows are taken
    del ev, ev_code
    content.append(f"events/{src.name}:{digest.rows}:{digest.hexdigest()}")
    return {col: pl.Series(col, pa.array(v, mask=None if valid[col].all() else ~valid[col]))
            for col, v in values.items()}


def _fold(feats: list[tuple[FeatureView, object]], fields: list[str], ev: pl.DataFrame,
          q_code: np.ndarray, q_t: np.ndarray, served: bool
          ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every feature's (values, non-null mask) for queries sorted by (code, t), folded from
    events sorted by (code, t, log order): the kernels of ``features.semantics.ranges``."""
    # events with a null field value do not count for that field's aggregations
    subsets: dict[str | None, pl.DataFrame] = {None: ev}
    for f in fields:
        subsets[f] = ev.filter(pl.col(f).is_not_null()) if ev[f].null_count() else ev
    bounds: dict[tuple, tuple[np.ndarray, ...]] = {}
    out = {}
    for view, feat in feats:
        fkey = feat.field if feat.aggregation.needs_field else None
        sub = subsets[fkey]
        bkey = (id(sub), feat.window, feat.hop)
        if bkey not in bounds:
            bounds[bkey] = window_bounds(sub[_CODE].to_numpy(), sub[_T].to_numpy(), q_code, q_t,
                                         feat.window, feat.hop)
            if served:  # only what the online store had applied by each row's time
                index, lo, hi = served_ranges(sub[_CODE].to_numpy(), sub[APPLIED].to_numpy(),
                                              *bounds[bkey], q_t)
                bounds[bkey] = (lo, hi, index)
        vals = None if fkey is None else sub[fkey].to_numpy()
        lo, hi, *index = bounds[bkey]
        if index and index[0] is not None and vals is not None:
            vals = vals[index[0]]
        out[column_name(view.name, feat.name)] = aggregate(feat.fn, vals, lo, hi)
    return out


def _batch(view: BatchFeatureView, names: list[str], spine: pl.DataFrame, t: np.ndarray,
           batch_dir: Path, files: list[str], max_rows: int = 0, cache: dict | None = None
           ) -> dict[str, pl.Series]:
    """As-of join: per spine row the entity's latest row with ``ts <= t`` (a tie: the later
    row in the file), null when none or when ``t - ts >= ttl``; per entity partition."""
    path = Path(view.path) if Path(view.path).is_absolute() else batch_dir / view.path
    if not path.exists():
        raise OfflineStoreError(f"batch view {view.name!r} reads {path}, which does not exist; "
                                "write its Parquet there (relative paths are under "
                                "$TESSERA_HOME/batch/)")
    files.append(f"batch/{view.path}:{path.stat().st_size}")
    keys = view.entity.keys
    lf = pl.scan_parquet(path)
    schema = lf.collect_schema()
    absent = [c for c in [*keys, view.timestamp_field, *names] if c not in schema]
    if absent:
        raise OfflineStoreError(f"batch view {view.name!r}: {path} lacks columns {absent}")
    uniq, q_code = _codes(spine, keys, {k: schema[k] for k in keys}, cache)
    rows = _collect_coded(
        lf.select([*keys, view.timestamp_field, *names]).with_row_index(_ROW), uniq, tuple(keys),
        [pl.col(_CODE), pl.col(_ROW),
         _utc_us(pl.col(view.timestamp_field), schema[view.timestamp_field],
                 f"batch view {view.name!r} column {view.timestamp_field!r}").alias(_T),
         *names])
    row_code = rows[_CODE].to_numpy()
    bounds = entity_bounds([row_code, q_code], uniq.height, max_rows)
    parts = split_rows(row_code, bounds)
    if len(parts) == 1:
        qorder, q_at = np.arange(len(t)), np.array([0, len(t)])
    else:
        qorder = np.argsort(q_code, kind="stable")
        q_at = np.searchsorted(q_code[qorder], bounds)
    got: dict[str, list[pl.Series]] = {column_name(view.name, n): [] for n in names}
    for k, part in enumerate(parts):
        at = qorder[q_at[k]:q_at[k + 1]]
        for col, s in _asof(view, names, _sorted_by_entity_time(take(rows, part), _ROW),
                            q_code[at], t[at], schema).items():
            got[col].append(s)
    del rows, row_code
    out = {col: pl.concat(ss) for col, ss in got.items()}
    if len(parts) > 1:  # back to spine order
        inverse = np.empty(len(t), dtype=np.int64)
        inverse[qorder] = np.arange(len(t))
        out = {col: s.gather(inverse) for col, s in out.items()}
    return out


def _asof(view: BatchFeatureView, names: list[str], rows: pl.DataFrame, q_code: np.ndarray,
          t: np.ndarray, schema: dict) -> dict[str, pl.Series]:
    """The as-of join of queries on batch rows sorted by (code, ts, file order)."""
    pos = asof_positions(rows[_CODE].to_numpy(), rows[_T].to_numpy(), q_code, t)
    found = pos >= 0
    safe = np.where(found, pos, 0)
    if rows.height:
        found &= (t - rows[_T].to_numpy()[safe]) < view.ttl
    hit = pl.Series("hit", found)
    out = {}
    for n in names:
        col = column_name(view.name, n)
        if rows.height == 0:
            out[col] = pl.Series(col, [None] * len(t), dtype=schema[n])
            continue
        vals = rows[n].gather(safe)
        out[col] = pl.select(pl.when(hit).then(vals).alias(col)).to_series()
    return out


def _spine_digest(spine: pl.DataFrame) -> str:
    buf = io.BytesIO()
    spine.write_ipc(buf, compression="uncompressed")
    return hashlib.sha256(buf.getvalue()).hexdigest()


def build_training_set(
    spine: object,
    features: list[str],
    *,
    repo: FeatureRepo | None = None,
    settings: Settings | None = None,
    event_log: EventLog | None = None,
    timestamp_column: str = "ts",
    timeline: str = "corrected",
    engine: str = "polars",
    master: str | None = None,
) -> TrainingSet:
    """Training set and its fingerprint; see the module docstring for the semantics.

    ``engine="spark"`` computes the same values on Apache Spark (``master``: its URL; see
    ``features.offline.spark_engine``)."""
    if engine != "polars":
        if engine != "spark":
            raise OfflineStoreError(f"unknown engine {engine!r}; use 'polars' or 'spark'")
        if timeline != "corrected":
            raise OfflineStoreError(f"timeline={timeline!r} is computed by the polars engine "
                                    "only; drop engine='spark'")
        from features.offline.spark_engine import build_training_set_spark

        return build_training_set_spark(spine, features, repo=repo, settings=settings,
                                        event_log=event_log, timestamp_column=timestamp_column,
                                        master=master)
    if timeline not in TIMELINES:
        raise OfflineStoreError(f"unknown timeline {timeline!r}; use 'corrected' (event time, "
                                "the default) or 'served' (what the online store held)")
    settings = settings or Settings.from_env()
    if repo is None:
        from features.registry import load_repo

        repo = load_repo(settings)
    log = event_log or EventLog(settings.offline_location)
    df = _as_frame(spine)
    if timestamp_column not in df.columns:
        raise OfflineStoreError(f"spine has no timestamp column {timestamp_column!r} (columns: "
                                f"{', '.join(df.columns)}); pass timestamp_column=")
    if df[timestamp_column].null_count():
        raise OfflineStoreError(f"{df[timestamp_column].null_count()} spine rows have a null "
                                f"{timestamp_column!r}; drop them or fill in a time")
    # request-time features (features.request) are computed from spine columns and the
    # stored features they read, which are built too even when not requested
    stored, requested, inputs = split_refs(repo, list(features))
    resolved = repo.resolve(stored + inputs)
    t = df.select(_utc_us(pl.col(timestamp_column), df.schema[timestamp_column],
                          f"spine column {timestamp_column!r}"))
    t = t.to_series().to_numpy().astype(np.int64)
    by_view: dict[str, list[str]] = {}
    for view, name in resolved:
        if name not in by_view.setdefault(view.name, []):
            by_view[view.name].append(name)
    clash = [column_name(v, n) for v, ns in by_view.items() for n in ns
             if column_name(v, n) in df.columns]
    if clash:
        raise OfflineStoreError(f"spine already has columns {clash}; rename them")
    code_cache: dict = {}  # entity codes of the spine, per key columns and types
    files: list[str] = []
    content: list[str] = []  # what the fingerprint covers besides spine and definitions
    columns: dict[str, pl.Series] = {}
    by_source: dict[str, list[tuple[FeatureView, list[str]]]] = {}
    for vname, names in by_view.items():
        view = repo.views[vname]
        _check_keys(df, view)
        if len(df) == 0:
            continue
        if isinstance(view, FeatureView):
            by_source.setdefault(view.source.name, []).append((view, names))
        else:
            columns.update(_batch(view, names, df, t, settings.home / "batch", files,
                                  settings.training_partition_rows, code_cache))
            content.append(files[-1])
    for views in by_source.values():
        columns.update(_windowed(views, df, t, log, files, content, timeline,
                                 settings.training_partition_rows, code_cache))
    wanted = {column_name(*parse_ref(r)) for r in stored}
    computed = request_columns(repo, requested, df, columns) if len(df) else {}
    columns = {c: columns[c] for v, ns in by_view.items() for n in ns
               if (c := column_name(v, n)) in columns and c in wanted}  # requested order
    columns.update(computed)  # then the request features
    out = df.with_columns(list(columns.values())) if columns else df
    if len(df) == 0:
        out = df.with_columns([pl.lit(None).alias(column_name(v, n))
                               for v, ns in by_view.items() for n in ns
                               if column_name(v, n) in wanted]
                              + [pl.lit(None).alias(column_name(*parse_ref(r)))
                                 for r in dict.fromkeys(requested)])
    h = hashlib.sha256()
    h.update(_spine_digest(df).encode())
    h.update(json.dumps({"features": list(features), "timestamp_column": timestamp_column,
                         **({"timeline": timeline} if timeline != "corrected" else {}),
                         "versions": {v: repo.views[v].version for v in sorted(by_view)},
                         **({"request_versions": {v: repo.requests[v].version for v in
                             sorted({parse_ref(r)[0] for r in requested})}}
                            if requested else {})},
                        sort_keys=True).encode())
    for c in content:
        h.update(c.encode() + b"\n")
    return TrainingSet(out, h.hexdigest(), files)


def training_set(
    spine: object,
    features: list[str],
    *,
    repo: FeatureRepo | None = None,
    settings: Settings | None = None,
    event_log: EventLog | None = None,
    timestamp_column: str = "ts",
    timeline: str = "corrected",
    engine: str = "polars",
    master: str | None = None,
) -> pl.DataFrame:
    """For each spine row, every requested ``view:feature`` at the row's timestamp.

    Spine columns and row order are kept; feature columns ``view__feature`` are appended.
    ``timeline``: "corrected" (event time) or "served" (what the online store held then).
    ``engine``: "polars" (this process) or "spark" (``master``: the Spark master URL).
    """
    return build_training_set(spine, features, repo=repo, settings=settings, timeline=timeline,
                              event_log=event_log, timestamp_column=timestamp_column,
                              engine=engine, master=master).frame


def write_training_set(df: pl.DataFrame, path: str | Path, fingerprint: str) -> Path:
    """Write atomically to Parquet with the fingerprint in the file's key-value metadata
    (polars' writer: it encodes row groups in parallel, pyarrow's ``write_table`` one column
    chunk at a time)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    df.write_parquet(tmp, compression="zstd",
                     metadata={FINGERPRINT_KEY.decode(): fingerprint})
    os.replace(tmp, path)
    return path


def read_fingerprint(path: str | Path) -> str | None:
    """The fingerprint stored in a training set file, if any: in the file's key-value metadata,
    or (files written before, by pyarrow) in the Arrow schema's."""
    for meta in (pq.read_metadata(path).metadata, pq.read_schema(path).metadata):
        fp = (meta or {}).get(FINGERPRINT_KEY)
        if fp:
            return fp.decode()
    return None
