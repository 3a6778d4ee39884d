"""Batch views online: per entity, the latest row within the view's TTL, into its Redis hash.

``materialize`` reads a ``BatchFeatureView``'s Parquet once, keeps rows with
``start <= ts <= end`` (and ``end - ts < ttl``: an older row would read as expired anyway),
takes per entity the row the training set would take at ``end`` (greatest ``ts``; a tie: the
later row in the file) and writes it into the entity's existing hash (``features.online.batch``
for the fields): one ``HSET`` per entity, so the write of an entity is atomic and touches one
key (a cluster routes it like any other). The key's expiry is raised, never lowered, to the
row's ``ts + ttl`` plus an hour.

Idempotent and resumable: every write is an absolute value, and the run's ``end`` is recorded
(``tessera:materialized``, field ``{view}@{version}``) only after the last entity is written. A
run that crashed is simply run again; ``incremental`` starts from the recorded ``end``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hiredis
import polars as pl

from features.definitions import BatchFeatureView
from features.errors import OfflineStoreError
from features.online.batch import feature_field
from features.online.layout import KEY_PREFIX, entity_key

STATE_KEY = f"{KEY_PREFIX}:materialized"
CHUNK = 5_000  # entities per pipelined write (and per progress step)
EXPIRY_SLACK_S = 3600
_ROW = "__tessera_row"
_TS = "__tessera_ts"


@dataclass
class MaterializeReport:
    view: str
    version: str
    start_us: int | None
    end_us: int
    entities: int  # hashes written
    wall_s: float


def state_field(view: BatchFeatureView) -> str:
    return f"{view.name}@{view.version}"


def last_materialized(client: Any, view: BatchFeatureView) -> int | None:
    """The ``end`` of the last completed run of this view version (µs), if any."""
    raw = client.hget(STATE_KEY, state_field(view))
    return None if raw is None else int(raw)


def batch_path(view: BatchFeatureView, home: Path) -> Path:
    """The view's Parquet file (relative paths are under ``$TESSERA_HOME/batch/``)."""
    p = Path(view.path)
    return p if p.is_absolute() else home / "batch" / p


def _ts_us(lf: pl.LazyFrame, view: BatchFeatureView) -> pl.Expr:
    dtype = lf.collect_schema()[view.timestamp_field]
    col = pl.col(view.timestamp_field)
    if isinstance(dtype, pl.Datetime):
        return (col.dt.convert_time_zone("UTC") if dtype.time_zone else col).dt.epoch("us")
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us")).dt.epoch("us")
    raise OfflineStoreError(f"batch view {view.name!r}: column {view.timestamp_field!r} has type "
                            f"{dtype}; it must be a datetime or a date")


def latest_rows(view: BatchFeatureView, path: Path, start_us: int | None,
                end_us: int) -> pl.DataFrame:
    """Per entity the row ``training_set()`` takes at ``end_us``, among rows from ``start_us``:
    keys, ``__tessera_ts`` (µs) and one column per feature with its stored bytes' value."""
    if not path.exists():
        raise OfflineStoreError(f"batch view {view.name!r} reads {path}, which does not exist")
    keys = list(view.entity.keys)
    lf = pl.scan_parquet(path)
    schema = lf.collect_schema()
    names = view.feature_names
    absent = [c for c in [*keys, view.timestamp_field, *names] if c not in schema]
    if absent:
        raise OfflineStoreError(f"batch view {view.name!r}: {path} lacks columns {absent}")
    lo = end_us - view.ttl + 1
    if start_us is not None:
        lo = max(lo, start_us)
    ts = _ts_us(lf, view).alias(_TS)
    return (
        lf.select([*keys, view.timestamp_field, *names])
        .with_row_index(_ROW)
        .with_columns(ts)
        .filter(pl.col(_TS).is_between(lo, end_us) & pl.all_horizontal(
            [pl.col(k).is_not_null() for k in keys]))
        .filter(pl.col(_TS) == pl.col(_TS).max().over(keys))
        .filter(pl.col(_ROW) == pl.col(_ROW).max().over(keys))
        .select([*keys, _TS, *names])
        .collect()
    )


def _encoded(df: pl.DataFrame, view: BatchFeatureView) -> list[list[bytes]]:
    """Per feature, every entity's field value: ``b"<ts>:<value>"`` or ``b"<ts>"`` for null."""
    ts = pl.col(_TS).cast(pl.String)
    exprs = []
    for n in view.feature_names:
        c = pl.col(n)
        t = view.schema[n]
        if t == "timestamp":  # epoch µs (naive datetimes are UTC, as in training sets)
            c = (c.cast(pl.Datetime("us")) if df.schema[n] == pl.Date else c).dt.epoch("us")
        elif t == "bool":
            c = pl.when(c).then(pl.lit("true")).when(c.not_()).then(pl.lit("false"))
        elif t == "float":
            c = c.cast(pl.Float64)
        exprs.append(pl.concat_str([ts, pl.lit(":"), c.cast(pl.String)])
                     .fill_null(ts).alias(n))
    out = df.select(exprs)
    return [out[n].cast(pl.Binary).to_list() for n in view.feature_names]


def _writes(df: pl.DataFrame, view: BatchFeatureView, now_us: int
            ) -> list[tuple[str, list[bytes], int]]:
    """Per entity of ``df``: (key, HSET field/value arguments, key expiry in seconds)."""
    values = _encoded(df, view)
    fields = [feature_field(view, n).encode() for n in view.feature_names]
    kcols = [df[k].to_list() for k in view.entity.keys]
    out = []
    for i, ts in enumerate(df[_TS].to_list()):
        args: list[bytes] = []
        for fld, col in zip(fields, values, strict=True):
            args += [fld, col[i]]
        ttl_s = max(1, math.ceil((ts + view.ttl - now_us) / 1e6)) + EXPIRY_SLACK_S
        out.append((entity_key(view.entity, [c[i] for c in kcols]), args, ttl_s))
    return out


def _send(client: Any, writes: list[tuple[str, list[bytes], int]]) -> None:
    """Per entity ``HSET key fields...``, then ``EXPIRE key s NX`` and ``EXPIRE key s GT`` (set
    when the key has none, raised when lower), pipelined. A cluster client (no connection pool)
    routes each key's commands through its own pipeline."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        pipe = client.pipeline(transaction=False)
        for key, args, ttl_s in writes:
            pipe.execute_command("HSET", key, *args)
            pipe.execute_command("EXPIRE", key, ttl_s, "NX")
            pipe.execute_command("EXPIRE", key, ttl_s, "GT")
        pipe.execute()
        return
    pack = hiredis.pack_command
    cmds = []
    for key, args, ttl_s in writes:
        cmds.append(pack(("HSET", key, *args)))
        cmds.append(pack(("EXPIRE", key, ttl_s, "NX")))
        cmds.append(pack(("EXPIRE", key, ttl_s, "GT")))
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(cmds)])
        for _ in cmds:
            conn.read_response(disable_decoding=True)  # an error reply raises
    except BaseException:
        conn.disconnect()  # replies may be left unread: never reuse this connection
        raise
    finally:
        pool.release(conn)


def materialize_view(
    client: Any,
    view: BatchFeatureView,
    home: Path,
    *,
    start_us: int | None = None,
    end_us: int | None = None,
    incremental: bool = False,
    progress: Callable[[int, int], None] | None = None,
    chunk: int = CHUNK,
) -> MaterializeReport:
    """Write ``view``'s latest rows in ``[start, end]`` (default: everything up to now; with
    ``incremental``, from the last completed run's end) and record ``end`` once done."""
    t0 = time.perf_counter()
    now = time.time_ns() // 1000
    end = now if end_us is None else int(end_us)
    if incremental:
        if start_us is not None:
            raise ValueError("give a start or incremental, not both")
        start_us = last_materialized(client, view)
    if start_us is not None and start_us > end:
        raise ValueError(f"start {start_us} is after end {end}")
    df = latest_rows(view, batch_path(view, home), start_us, end)
    total = df.height
    if progress:
        progress(0, total)
    for lo in range(0, total, chunk):
        part = df.slice(lo, chunk)
        _send(client, _writes(part, view, now))
        if progress:
            progress(min(lo + chunk, total), total)
    client.hset(STATE_KEY, state_field(view), str(end))
    return MaterializeReport(view.name, view.version, start_us, end, total,
                             time.perf_counter() - t0)
