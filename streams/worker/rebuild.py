"""Rebuilding tile rings from the offline event log (after Redis lost its data, or to backfill
a new view version).

The online store is a function of the events a worker folded; the event log holds every one of
them. So the rings can be recomputed from the log — with the worker's own kernel
(``tiles.fold_batch``), in the order the worker folds (per entity: Kafka offset order, which is
the order of its one partition), with the same late horizon (``online.py``). The result is the
bytes a worker that streamed those events would hold: ``tests/streams/test_rebuild.py`` checks
it byte for byte against ``OnlineWriter``.

Three steps, each usable on its own (the worker's integration calls them):

* ``load_events``: one read of the log — only the date partitions the horizon reaches, only
  the source topic's rows (imported files never went through Kafka, so no worker folded them),
  optionally at or below per-partition offset watermarks and only some entities — sorted by
  entity, then log order;
* ``fold_entities``: fold them in chunks of entities, vectorised (numpy, no Python per event);
  ``rings_from_log`` is the two together;
* ``write_rings``: whole ring fields to Redis with ``HSET`` (absolute, so rewriting is
  harmless) plus the worker's ``EXPIRE``, one script call per key (``OnlineBackend.put_rings``,
  grouped by node on a Redis Cluster), in pipelined chunks.

``rebuild`` runs all three with the writes overlapping the folds (one chunk in flight).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

from features.definitions import EventSource, FeatureView
from features.offline.event_log import EventLog
from features.online.backend import OnlineBackend, backend_of
from features.online.layout import ViewLayout, entity_key
from streams.worker.online import TTL_REFRESH_S
from streams.worker.tiles import NO_EVENT, HopPlan, fields_needed, fold_batch, plan_views

HOUR_US = 3_600_000_000
EPOCH = "_epoch"  # the log's topic generation (absent in older logs = 0)
DEFAULT_CHUNK = 16_384  # entities per fold: ~100 MB of rings for 9 demo-sized plans


def horizon_us(views: list[FeatureView], allowed_lateness_us: int = HOUR_US) -> int:
    """How far back a ring can still matter at "now": the worker's late horizon
    (``OnlineWriter.horizon_us``: longest window + its hop + allowed lateness)."""
    return max(f.window + f.hop for v in views for f in v.features) + allowed_lateness_us


def worker_ttl_s(views: list[FeatureView]) -> int:
    """The ``EXPIRE`` the worker sends for a key of these views (TTL + the refresh slack)."""
    return max(ViewLayout(v).ttl_seconds for v in views) + TTL_REFRESH_S


@dataclass
class LogEvents:
    """A source's events to fold, sorted by entity and then log order.

    ``starts[i]:starts[i + 1]`` are entity ``i``'s rows; ``keys``/``partitions`` are per
    entity (Redis key, the partition its events came from)."""

    source: EventSource
    start_us: int  # events with ts >= start_us were read
    ts: np.ndarray  # int64 µs
    seq: np.ndarray  # int64 Kafka offset (what the worker passes to fold_batch as ``seq``)
    cols: dict[str, np.ndarray]  # float64 value columns the folds read
    starts: np.ndarray  # int64, n_entities + 1
    keys: list[str]
    partitions: np.ndarray  # int32 per entity

    @property
    def entities(self) -> int:
        return len(self.keys)

    @property
    def events(self) -> int:
        return len(self.ts)


@dataclass
class RingChunk:
    """The rings of a chunk of entities: ``rings[j][i]`` is key ``i``'s ring of ``fields[j]``
    as a uint8 row (the stored bytes), written where ``present[i, j]``."""

    keys: list[str]
    partitions: np.ndarray
    fields: list[str]
    rings: list[np.ndarray]
    present: np.ndarray
    events: int
    total_entities: int  # of the whole rebuild, for progress


def load_events(
    source: EventSource,
    views: list[FeatureView],
    event_log: EventLog,
    *,
    now_us: int,
    upto: dict[int, int] | None = None,
    entity_filter: pl.Expr | None = None,
    allowed_lateness_us: int = HOUR_US,
    epoch: int | None = None,
) -> LogEvents:
    """The events of ``source`` in ``event_log`` that a ring of ``views`` can still hold at
    ``now_us``: event time ``>= now_us - horizon_us(views, allowed_lateness_us)`` (the worker's
    late rule; later events, even future ones, are all read), from the source's own topic.

    ``upto``: ``{partition: last offset}`` — only events at or below it (the offsets whose
    effects a worker's Redis watermark covers); a partition absent from it contributes nothing.
    None = everything in the log. The offsets are those of ``epoch`` (default: per partition,
    the newest ``_epoch`` of its rows read; a log without the column is epoch 0): rows of
    older epochs are all before it and always read, rows of newer epochs never.

    ``entity_filter``: a polars predicate on the log's columns (the entity keys,
    ``_partition``, ...) selecting the entities to rebuild, e.g.
    ``pl.col("_partition").is_in(mine)``.
    """
    start = now_us - horizon_us(views, allowed_lateness_us)
    keys = list(source.entity.keys)
    tsf = source.timestamp_field
    value_fields = fields_needed(plan_views(views))
    meta = ["_partition", "_offset", EPOCH]
    frames = []
    for rel, _ in event_log.files(source, start, None):
        lf = event_log.scan_file(source, rel)  # a local file or an object
        if EPOCH not in lf.collect_schema().names():
            lf = lf.with_columns(pl.lit(0, pl.Int64).alias(EPOCH))
        frames.append(lf)
    empty = {k: pl.String for k in keys} | {
        tsf: pl.Int64, "_partition": pl.Int32, "_offset": pl.Int64, EPOCH: pl.Int64,
        **dict.fromkeys(value_fields, pl.Float64)}
    if not frames:
        df = pl.DataFrame(schema=empty)
    else:
        lf = pl.concat([f.select(
            *keys, pl.col(tsf).dt.epoch("us").alias(tsf), *value_fields, "_topic", *meta)
            for f in frames], how="vertical_relaxed")
        lf = lf.filter((pl.col(tsf) >= start) & (pl.col("_topic") == source.topic))
        lf = lf.with_columns(pl.col(EPOCH).fill_null(0).cast(pl.Int64),
                             *(pl.col(f).cast(pl.Float64) for f in value_fields))
        if entity_filter is not None:
            lf = lf.filter(entity_filter)
        df = lf.drop("_topic").collect()
        if upto is not None:
            df = _at_or_below(df, upto, epoch)
    n = df.height
    # entity, then log order: sort codes of the key columns (grouping is all that matters)
    codes = [_codes(df[k]) for k in keys]
    order = np.lexsort((df["_offset"].to_numpy(), df["_partition"].to_numpy(),
                        df[EPOCH].to_numpy(), *reversed(codes)))
    new = np.zeros(n, dtype=bool)
    if n:
        new[0] = True
        for c in codes:
            cs = c[order]
            new[1:] |= cs[1:] != cs[:-1]
    first = np.flatnonzero(new)
    heads = df[order[first]]
    ent = source.entity
    if len(keys) == 1:  # the worker's strings (entity_key), without its per-call checks
        prefix = entity_key(ent, ("",))
        rkeys = [prefix + str(v) for v in heads[keys[0]].to_list()]
    else:
        rkeys = [entity_key(ent, vs) for vs in zip(*(heads[k].to_list() for k in keys),
                                                   strict=True)]

    def column(name: str, dtype: type) -> np.ndarray:
        return df[name].to_numpy().astype(dtype, copy=False)[order]

    return LogEvents(
        source=source, start_us=start,
        ts=column(tsf, np.int64),
        seq=column("_offset", np.int64),
        cols={f: column(f, np.float64) for f in value_fields},
        starts=np.append(first, n).astype(np.int64),
        keys=rkeys,
        partitions=heads["_partition"].to_numpy().astype(np.int32, copy=False),
    )


def _codes(col: pl.Series) -> np.ndarray:
    """Integers equal exactly where ``col`` is (strings: categorical codes)."""
    if col.dtype == pl.String:
        return col.cast(pl.Categorical).to_physical().to_numpy()
    if col.dtype.is_integer():
        return col.to_numpy()
    return col.rank("dense").to_numpy()


def _at_or_below(df: pl.DataFrame, upto: dict[int, int], epoch: int | None) -> pl.DataFrame:
    cur = pl.col(EPOCH).max().over("_partition") if epoch is None else pl.lit(epoch)
    marks = pl.DataFrame({"_partition": list(upto), "_upto": list(upto.values())},
                         schema={"_partition": pl.Int32, "_upto": pl.Int64})
    df = df.join(marks, on="_partition", how="inner")
    keep = (pl.col(EPOCH) < cur) | ((pl.col(EPOCH) == cur)
                                     & (pl.col("_offset") <= pl.col("_upto")))
    return df.filter(keep).drop("_upto")


def fold_entities(
    events: LogEvents, plans: list[HopPlan], *, chunk_entities: int = DEFAULT_CHUNK
) -> Iterator[RingChunk]:
    """Fold ``events`` into fresh rings of ``plans``, ``chunk_entities`` entities at a time.

    One ``fold_batch`` per plan and chunk: the rings equal a stream of the same events in any
    batch split (a tile's parts fold in log order either way, and a ring ends up holding the
    tiles newer than its newest tile minus its slots)."""
    n = events.entities
    fields = [p.layout.field for p in plans]
    for lo in range(0, n, chunk_entities):
        hi = min(n, lo + chunk_entities)
        a, b = int(events.starts[lo]), int(events.starts[hi])
        m = hi - lo
        rows = np.repeat(np.arange(m, dtype=np.int64), np.diff(events.starts[lo:hi + 1]))
        ts, seq = events.ts[a:b], events.seq[a:b]
        cols = {k: v[a:b] for k, v in events.cols.items()}
        # every row has events, in order: np.unique(rows, return_inverse=True) without a sort
        unique_rows = (np.arange(m, dtype=np.int64), rows)
        out, present = [], np.empty((m, len(plans)), dtype=bool)
        for j, plan in enumerate(plans):
            rings = np.broadcast_to(np.frombuffer(plan.empty_ring, dtype=plan.dtype), (m,)).copy()
            fold_batch(rings, plan, rows, ts, seq, cols, unique_rows)
            present[:, j] = rings["newest"] != NO_EVENT
            out.append(rings.view(np.uint8).reshape(m, plan.dtype.itemsize))
        yield RingChunk(events.keys[lo:hi], events.partitions[lo:hi], fields, out, present,
                        b - a, n)


def rings_from_log(
    source: EventSource,
    views: list[FeatureView],
    event_log: EventLog,
    *,
    now_us: int,
    upto: dict[int, int] | None = None,
    entity_filter: pl.Expr | None = None,
    allowed_lateness_us: int = HOUR_US,
    epoch: int | None = None,
    chunk_entities: int = DEFAULT_CHUNK,
) -> Iterator[RingChunk]:
    """Per chunk of entities, the exact ring bytes of every (view, hop) field of ``views``
    from the log (``load_events`` says which events, ``fold_entities`` how)."""
    events = load_events(source, views, event_log, now_us=now_us, upto=upto,
                         entity_filter=entity_filter, allowed_lateness_us=allowed_lateness_us,
                         epoch=epoch)
    yield from fold_entities(events, plan_views(views), chunk_entities=chunk_entities)


WRITE_BYTES = 4 << 20  # per pipelined round trip


def write_rings(
    sink_or_client: OnlineBackend | object,
    keys: list[str],
    fields: list[str],
    rings: list[np.ndarray],
    ttl_s: int,
    *,
    present: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
    clear_applied: bool = False,
) -> int:
    """``HSET key field ring ...`` for every key (only the given fields: a hash's other fields
    are untouched) and ``EXPIRE key ttl_s`` (``worker_ttl_s``: what the worker sets), one
    script call per key (``OnlineBackend.put_rings``: per node on a cluster), in round trips of
    about 4 MB. Absolute values, so writing the same rings again is harmless.
    ``clear_applied``: also drop each key's ``~applied`` (a rebuild of all the source's views:
    the rings now hold what the log holds, up to the new watermarks). ``progress(n)`` after
    each round trip with the keys it wrote. Returns the number of keys written (those with at
    least one present ring)."""
    sink = backend_of(sink_or_client)
    if present is None:
        present = np.ones((len(keys), len(fields)), dtype=bool)
    per_key = max(1, sum(r.shape[1] for r in rings) + 64)
    step = max(1, WRITE_BYTES // per_key)
    written = 0
    for lo in range(0, len(keys), step):
        hi = min(len(keys), lo + step)
        written += sink.put_rings(keys[lo:hi], fields, [r[lo:hi] for r in rings],
                                  present[lo:hi], ttl_s, clear_applied)
        if progress is not None:
            progress(hi - lo)
    return written


@dataclass
class RebuildReport:
    entities: int
    events: int
    keys_written: int
    read_s: float
    total_s: float


def rebuild(
    sink_or_client: OnlineBackend | object,
    source: EventSource,
    views: list[FeatureView],
    event_log: EventLog,
    *,
    now_us: int,
    ttl_s: int | None = None,
    upto: dict[int, int] | None = None,
    entity_filter: pl.Expr | None = None,
    allowed_lateness_us: int = HOUR_US,
    epoch: int | None = None,
    chunk_entities: int = DEFAULT_CHUNK,
    progress: Callable[[int, int], None] | None = None,
    clear_applied: bool = False,
) -> RebuildReport:
    """``rings_from_log`` then ``write_rings``, each chunk written while the next is folded.
    ``ttl_s`` defaults to ``worker_ttl_s(views)``; pass the worker's (all the source's views)
    when rebuilding only some. ``progress(entities done, total)`` after each chunk.
    ``clear_applied``: see ``write_rings`` (the worker's rebuild after a store loss)."""
    t0 = time.perf_counter()
    events = load_events(source, views, event_log, now_us=now_us, upto=upto,
                         entity_filter=entity_filter, allowed_lateness_us=allowed_lateness_us,
                         epoch=epoch)
    read_s = time.perf_counter() - t0
    ttl = worker_ttl_s(views) if ttl_s is None else ttl_s
    sink = backend_of(sink_or_client)
    written, done = 0, 0
    pending: Future | None = None
    with ThreadPoolExecutor(1, thread_name_prefix="rebuild-write") as pool:
        for chunk in fold_entities(events, plan_views(views), chunk_entities=chunk_entities):
            if pending is not None:
                written += pending.result()
                if progress is not None:
                    progress(done, events.entities)
            pending = pool.submit(write_rings, sink, chunk.keys, chunk.fields,
                                  chunk.rings, ttl, present=chunk.present,
                                  clear_applied=clear_applied)
            done += len(chunk.keys)
        if pending is not None:
            written += pending.result()
    if progress is not None:
        progress(done, events.entities)
    return RebuildReport(events.entities, events.events, written, read_s,
                         time.perf_counter() - t0)


@dataclass
class BackfillReport:
    view: str
    version: str
    upto: dict[int, int] | None  # the watermarks folded up to (None: the whole log)
    rebuild: RebuildReport
    warnings: list[str]


def backfill(
    client: object,
    view: FeatureView,
    source_views: list[FeatureView],
    event_log: EventLog,
    *,
    group: str,
    now_us: int | None = None,
    allowed_lateness_us: int = HOUR_US,
    chunk_entities: int = DEFAULT_CHUNK,
    progress: Callable[[int, int], None] | None = None,
) -> BackfillReport:
    """Write ``view``'s rings (only its fields) from the log, up to the Redis watermarks of
    the worker group ``group`` (the whole log when Redis has none), with the key TTL the
    worker sets for ``source_views`` (every windowed view of the source it folds).

    While it runs, ``tessera:store`` holds ``rebuilding:backfill:<view>@<version>`` (JSON:
    reason, view, version, start, pid), removed when done or failed. Exact on its own only if
    no worker writes these fields meanwhile and the log holds every offset up to the
    watermarks (see docs/streams.md, "Rebuild and backfill"); ``warnings`` says when the log
    is behind a watermark."""
    import json
    import os

    from features.online.layout import REBUILDING_PREFIX, STORE_KEY, offset_key

    source = view.source
    now = time.time_ns() // 1000 if now_us is None else now_us
    parts = list(range(source.partitions))
    sink = backend_of(client)
    marks = [None if w is None else (w.offset, w.epoch)
             for w in sink.watermarks([offset_key(group, source.topic, p) for p in parts])]
    warnings: list[str] = []
    upto: dict[int, int] | None = None
    epoch: int | None = None
    if any(m is not None for m in marks):
        upto = {p: m[0] if m is not None else -1 for p, m in zip(parts, marks, strict=True)}
        epoch = max(m[1] for m in marks if m is not None)
        for p, wm in upto.items():
            logged = event_log.committed_offset(source, source.topic, p)
            if wm >= 0 and (logged is None or logged < wm):
                warnings.append(
                    f"partition {p}: Redis covers offsets up to {wm} but the event log only up "
                    f"to {logged}; those events are missing from {view.name} (a worker is "
                    "running, or did not checkpoint: stop it cleanly, then backfill again)")
    flag = f"{REBUILDING_PREFIX}backfill:{view.name}@{view.version}"
    client.hset(STORE_KEY, flag, json.dumps({
        "reason": "backfill", "view": view.name, "version": view.version,
        "started_us": time.time_ns() // 1000, "pid": os.getpid(), "upto": upto}))
    try:
        report = rebuild(client, source, [view], event_log, now_us=now,
                         ttl_s=worker_ttl_s(source_views or [view]), upto=upto, epoch=epoch,
                         allowed_lateness_us=allowed_lateness_us,
                         chunk_entities=chunk_entities, progress=progress)
    finally:
        client.hdel(STORE_KEY, flag)
    return BackfillReport(view.name, view.version, upto, report, warnings)
