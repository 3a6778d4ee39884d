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
import redis

from features.definitions import BatchFeatureView
from features.errors import OfflineStoreError
from features.online.batch import feature_field
from features.online.cluster import is_cluster
from features.online.layout import KEY_PREFIX, entity_key

STATE_KEY = f"{KEY_PREFIX}:materialized"
CHUNK = 10_000  # entities per pipelined write (and per progress step)
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
    select_s: float = 0.0  # reading the file and choosing each entity's row


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


def _value(df: pl.DataFrame, view: BatchFeatureView, name: str) -> pl.Expr:
    """A feature's field value: ``"<ts>:<value>"``, or ``"<ts>"`` when the row holds a null."""
    c = pl.col(name)
    t = view.schema[name]
    if t == "timestamp":  # epoch µs (naive datetimes are UTC, as in training sets)
        c = (c.cast(pl.Datetime("us")) if df.schema[name] == pl.Date else c).dt.epoch("us")
    elif t == "bool":
        c = pl.when(c).then(pl.lit("true")).when(c.not_()).then(pl.lit("false"))
    elif t == "float":
        c = c.cast(pl.Float64)
    ts = pl.col(_TS).cast(pl.String)
    return pl.concat_str([ts, pl.lit(":"), c.cast(pl.String)]).fill_null(ts)


def _bulk(e: pl.Expr) -> pl.Expr:
    """A RESP bulk string of a string column (length in bytes)."""
    return pl.concat_str([pl.lit("$"), e.str.len_bytes().cast(pl.String), pl.lit("\r\n"), e,
                          pl.lit("\r\n")])


def _const(b: str) -> str:
    return f"${len(b.encode())}\r\n{b}\r\n"


def _commands(df: pl.DataFrame, view: BatchFeatureView, now_us: int) -> tuple[bytes, list[str]]:
    """The RESP of ``HSET key field value ...``, ``EXPIRE key s NX`` and ``EXPIRE key s GT``
    (set when the key has none, raised when lower) for every entity of ``df``, built column-wise
    (polars) rather than command by command; and the keys, in order."""
    kcols = [df[k].to_list() for k in view.entity.keys]
    keys = [entity_key(view.entity, vals) for vals in zip(*kcols, strict=True)]
    names = view.feature_names
    key = _bulk(pl.col("__key"))
    ttl_s = ((pl.col(_TS) + view.ttl - now_us) / 1e6).ceil().cast(pl.Int64).clip(1)
    ttl = _bulk((ttl_s + EXPIRY_SLACK_S).cast(pl.String))
    hset = [pl.lit(f"*{2 + 2 * len(names)}\r\n{_const('HSET')}"), key]
    for n in names:
        hset += [pl.lit(_const(feature_field(view, n))), _bulk(_value(df, view, n))]
    expire = pl.lit(f"*4\r\n{_const('EXPIRE')}")
    cmd = pl.concat_str([*hset, expire, key, ttl, pl.lit(_const("NX")),
                         expire, key, ttl, pl.lit(_const("GT"))])
    out = df.with_columns(pl.Series("__key", keys, dtype=pl.String)).select(cmd.str.join(""))
    return out.item().encode(), keys


class _Pipeline:
    """Commands written on one pooled connection as they are built, replies read at the end
    (raw hiredis: redis-py's per-reply Python would cost more than Redis' work), so Redis
    applies one chunk while the next is being built."""

    def __init__(self, client: Any) -> None:
        self.pool = client.connection_pool
        self.conn = self.pool.get_connection()
        self.conn.connect()
        self.pending = 0

    def send(self, resp: bytes, n_cmds: int) -> None:
        self.conn._sock.sendall(resp)
        self.pending += n_cmds

    def finish(self) -> None:
        sock, reader, error = self.conn._sock, hiredis.Reader(), None
        while self.pending:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("Redis closed the connection during materialize")
            reader.feed(data)
            while (r := reader.gets()) is not False:
                self.pending -= 1
                if isinstance(r, hiredis.ReplyError) and error is None:
                    error = r
        if error is not None:
            raise redis.ResponseError(f"materialize write failed: {error}")

    def close(self, ok: bool) -> None:
        if not ok:
            self.conn.disconnect()  # replies may be left unread: never reuse this connection
        self.pool.release(self.conn)


def _send_cluster(client: Any, df: pl.DataFrame, view: BatchFeatureView, now_us: int) -> None:
    """The same commands through a cluster client's pipeline, which routes each key to its
    node (every command touches one key)."""
    kcols = [df[k].to_list() for k in view.entity.keys]
    values = df.select([_value(df, view, n).alias(n) for n in view.feature_names])
    fields = [feature_field(view, n) for n in view.feature_names]
    pipe = client.pipeline(transaction=False)
    for i, ts in enumerate(df[_TS].to_list()):
        key = entity_key(view.entity, [c[i] for c in kcols])
        args: list[str] = []
        for f, n in zip(fields, view.feature_names, strict=True):
            args += [f, values[n][i]]
        ttl_s = max(1, math.ceil((ts + view.ttl - now_us) / 1e6)) + EXPIRY_SLACK_S
        pipe.execute_command("HSET", key, *args)
        pipe.execute_command("EXPIRE", key, ttl_s, "NX")
        pipe.execute_command("EXPIRE", key, ttl_s, "GT")
    pipe.execute()


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
    select_s = time.perf_counter() - t0
    total = df.height
    if progress:
        progress(0, total)
    pipe = None if is_cluster(client) else _Pipeline(client)
    ok = False
    try:
        for lo in range(0, total, chunk):
            part = df.slice(lo, chunk)
            if pipe is None:
                _send_cluster(client, part, view, now)
            else:
                resp, keys = _commands(part, view, now)
                pipe.send(resp, 3 * len(keys))
            if progress:
                progress(min(lo + chunk, total), total)
        if pipe is not None:
            pipe.finish()
        ok = True
    finally:
        if pipe is not None:
            pipe.close(ok)
    client.hset(STATE_KEY, state_field(view), str(end))
    return MaterializeReport(view.name, view.version, start_us, end, total,
                             time.perf_counter() - t0, select_s)
