"""The online half of a batch: skip what Redis already has, fold the rest, commit fenced.

State: per partition the Redis watermark (last offset whose effects are in Redis), and the
decoded rings of every entity the worker's partitions have touched (``RingCache``, numpy).
Entities are partitioned by key, so the partition's owner is the only writer of those rings and
the cache stays true — unless the partition moved, which the watermark fence detects (then the
partition's rows are dropped and reloaded).

Late events: an event with ``ts < wall clock - (longest window + its hop + allowed lateness)``
is not
applied online (counted in ``late``); it is still written to the offline log. No read at "now"
could see it, so serving and the offline recomputation at any ``t >= now`` agree.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from features.definitions import EventSource, FeatureView
from features.errors import TesseraError
from features.event_columns import EventColumns
from features.online.layout import ViewLayout, Watermark, entity_key, offset_key
from streams.worker.redis_sink import RedisSink
from streams.worker.tiles import HopPlan, RingCache, fields_needed, fold_batch, plan_views

log = logging.getLogger("tessera.worker")

# HSET keeps a key's TTL, so the TTL is refreshed at most once an hour per entity: a key lives
# between ttl and ttl + 1 h after its last write.
TTL_REFRESH_S = 3600
# Cached rings of entities idle beyond the late horizon are dropped this often, so the worker's
# memory follows the active entities, as Redis's does.
EVICT_EVERY_S = 60.0


class StoreLost(TesseraError):
    """Redis no longer holds what this worker wrote (flushed, restarted empty, failed over to
    a replica that lags): a partition's watermark is gone or went backwards. The worker
    rebuilds the partitions' rings from the event log before it writes again."""

    def __init__(self, source: str, partitions: list[int], why: str) -> None:
        super().__init__(f"online store lost data of {source} partitions {partitions}: {why}")
        self.source = source
        self.partitions = partitions


@dataclass
class _Job:
    """A write in flight: its batches (to refold if fenced off), counters and offsets."""

    batches: list
    counts: list
    last: dict[int, int]
    fences: dict[str, tuple[Watermark, Watermark]]
    due: np.ndarray
    result: Future
    submitted_at: float = field(default_factory=time.time)


@dataclass
class OnlineStats:
    applied: int = 0
    skipped_replay: int = 0
    late: int = 0
    fence_retries: int = 0
    newest_ts: int | None = None  # µs, newest event applied (freshness metric)


class OnlineWriter:
    """Applies decoded events of one source to Redis, exactly once in effect."""

    def __init__(
        self,
        source: EventSource,
        views: list[FeatureView],
        sink: RedisSink,
        group: str,
        allowed_lateness_us: int,
    ) -> None:
        self.source = source
        self.sink = sink
        self.group = group
        self.plans: list[HopPlan] = plan_views(views)
        self.fields = [p.layout.field for p in self.plans]
        # a window at t reaches back up to W + h (its tail is aligned to the hop grid)
        self.allowed_lateness_us = allowed_lateness_us
        self.horizon_us = max(f.window + f.hop for v in views for f in v.features) + (
            allowed_lateness_us
        )
        self.ttl_s = max(ViewLayout(v).ttl_seconds for v in views)
        self.watermarks: dict[int, int] = {}  # partition -> last offset applied
        self.marks: dict[int, Watermark] = {}  # partition -> the stored value (epoch, print)
        self.cache = RingCache(self.plans)
        self.value_fields = fields_needed(self.plans)
        self.stats = OnlineStats()
        self._reset_pending()
        self._inflight: _Job | None = None
        self.landed_at: float | None = None  # when the last write reached Redis
        self._evicted_at = time.monotonic()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="redis-commit")
        keys = source.entity.keys
        ent = source.entity
        if len(keys) == 1:  # same strings as entity_key(), without its per-call checks
            prefix, k0 = entity_key(ent, ("",)), keys[0]
            self._keys = lambda c, ix: [prefix + str(v) for v in _values(c[k0], ix)]
        else:
            self._keys = lambda c, ix: [
                entity_key(ent, vs) for vs in zip(*(_values(c[k], ix) for k in keys), strict=True)]

    def forget(self, partitions: list[int]) -> None:
        """Commit what is pending, then drop the partitions' cached state (revoked)."""
        self.commit()
        for p in partitions:
            self.watermarks.pop(p, None)
            self.marks.pop(p, None)
        self.cache.drop(partitions)

    def watermark(self, partition: int) -> int:
        """Last offset whose effects are in Redis (loaded on first use)."""
        self._load_watermarks([partition])
        return self.watermarks[partition]

    def _load_watermarks(self, partitions) -> None:
        missing = [p for p in partitions if p not in self.watermarks]
        if missing:
            wms = self.sink.watermarks([self.offset_key(p) for p in missing])
            for p, w in zip(missing, wms, strict=True):
                self.set_mark(p, w or Watermark())

    def set_mark(self, partition: int, mark: Watermark) -> None:
        """Take ``mark`` as the partition's watermark (loaded, rebuilt or a new epoch)."""
        self.marks[partition] = mark
        self.watermarks[partition] = mark.offset

    def epoch(self, partition: int) -> int:
        self._load_watermarks([partition])
        return self.marks[partition].epoch

    def offset_key(self, partition: int) -> str:
        return offset_key(self.group, self.source.topic, partition)

    @property
    def pending(self) -> int:
        """Events folded into the cache but not yet submitted to Redis."""
        return self._pending_events

    @property
    def idle(self) -> bool:
        """Nothing pending and no write in flight."""
        return not self._pending and self._inflight is None

    def apply(self, batch: dict[int, tuple[EventColumns, int]]) -> None:
        """Fold and commit one batch (``fold`` then ``commit``)."""
        self.fold(batch)
        self.commit()

    def fold(self, batch: dict[int, tuple[EventColumns, int]]) -> None:
        """Fold ``{partition: (valid events, last offset of the batch)}`` into the cache; it
        reaches Redis at the next ``commit``."""
        if not batch:
            return
        self._load_watermarks(batch)
        self._pending.append(batch)
        self._pending_events += sum(len(b[0]) for b in batch.values())
        self._fold(batch)

    def commit(self) -> None:
        """Everything folded so far into Redis; returns when it is there."""
        self.wait()
        while self._pending:
            self.submit()
            self.wait()

    def submit(self) -> None:
        """Start writing what is pending in the background (after the previous write ended):
        every ring the pending batches touched and the partitions' new watermarks, in one
        fenced transaction. Folding goes on meanwhile; ``wait`` collects the outcome."""
        self.wait()
        if not self._pending:
            return
        last: dict[int, int] = {}
        prints: dict[int, int] = {}
        for batch in self._pending:
            for p, (_, off, fp) in batch.items():
                if off > last.get(p, -1):
                    last[p], prints[p] = off, fp
        fences = {}
        for p, off in last.items():
            old = self.marks[p]
            new = Watermark(off, old.epoch, prints[p]) if off > old.offset else old
            fences[self.offset_key(p)] = (old, new)
        cache = self.cache
        rows = np.nonzero(cache.dirty)[0]
        cache.dirty[rows] = False
        due = rows[cache.expire_due[rows] <= time.time()]
        args = ([cache.keys[r] for r in rows.tolist()], self.fields, *cache.encode(rows),
                [cache.keys[r] for r in due.tolist()], self.ttl_s + TTL_REFRESH_S, fences)
        self._inflight = _Job(self._pending, self._counts, last, fences, due,
                              self._pool.submit(_timed, self.sink.commit, *args))
        self._reset_pending()

    def wait(self) -> None:
        """Collect the background write, if any. If another worker moved a
        watermark since we loaded it, nothing was written: drop the rings of every partition
        in flight or pending, reload them and refold those batches (pending again). If a
        watermark is gone or went backwards, Redis lost data: raise ``StoreLost``."""
        job, self._inflight = self._inflight, None
        if job is None:
            return
        # a Redis error propagates: the worker stops and a restart replays from Kafka
        stale, landed_at = job.result.result()
        log.debug("redis write %.1f ms after submit", (landed_at - job.submitted_at) * 1000)
        cache = self.cache
        if stale is None:
            self.landed_at = landed_at
            cache.expire_due[job.due] = time.time() + TTL_REFRESH_S
            c = job.counts
            self.stats.applied += c[0]
            self.stats.skipped_replay += c[1]
            self.stats.late += c[2]
            if c[3] is not None:
                self.stats.newest_ts = max(self.stats.newest_ts or c[3], c[3])
            for p in job.last:
                self.set_mark(p, job.fences[self.offset_key(p)][1])
            if time.monotonic() - self._evicted_at > EVICT_EVERY_S:
                self._evicted_at = time.monotonic()
                cache.evict(time.time_ns() // 1000 - self.horizon_us)
            return
        lost = []
        for key, (old, _) in job.fences.items():
            cur = stale.get(key)
            if (cur is None and old.offset >= 0) or (
                    cur is not None and cur.epoch == old.epoch and cur.offset < old.offset):
                lost.append(int(key.rsplit(":", 1)[1]))
        if lost:
            # the batches are in the offline buffer or the log: the rebuild folds them
            self._reset_pending()
            raise StoreLost(self.source.name, sorted(lost),
                            "its offset watermark is gone or went backwards in Redis")
        self.stats.fence_retries += 1
        batches = job.batches + self._pending
        parts = sorted({p for b in batches for p in b})
        cache.drop(parts)
        for p in parts:
            self.watermarks.pop(p, None)
            self.marks.pop(p, None)
        self._reset_pending()
        for batch in batches:
            self.fold(batch)

    def check_store(self) -> None:
        """Raise ``StoreLost`` if Redis no longer holds a watermark this worker wrote (run when
        idle: a store flushed while no event arrives must be noticed all the same)."""
        if self._inflight is not None:
            return
        parts = [p for p, m in self.marks.items() if m.offset >= 0]
        if not parts:
            return
        current = self.sink.watermarks([self.offset_key(p) for p in parts])
        lost = [p for p, cur in zip(parts, current, strict=True)
                if cur is None or (cur.epoch == self.marks[p].epoch
                                   and cur.offset < self.marks[p].offset)]
        if lost:
            raise StoreLost(self.source.name, lost,
                            "its offset watermark is gone or went backwards in Redis")

    def reset(self, marks: dict[int, Watermark]) -> None:
        """After a rebuild: nothing pending, no cached ring, these watermarks."""
        self.wait_quietly()
        self._reset_pending()
        self.cache.drop(list(marks))
        for p, m in marks.items():
            self.set_mark(p, m)

    def wait_quietly(self) -> None:
        """Drop the write in flight, whatever its outcome (the store is being rebuilt)."""
        job, self._inflight = self._inflight, None
        if job is not None:
            try:
                job.result.result()
            except Exception as e:  # noqa: BLE001 - its effects are rebuilt anyway
                log.info("write in flight during a rebuild ended with %r", e)

    def _reset_pending(self) -> None:
        self._pending: list[dict[int, tuple[EventColumns, int]]] = []
        self._pending_events = 0
        self._counts: list = [0, 0, 0, None]  # applied, skipped, late, newest ts

    def _fold(self, batch: dict[int, tuple[EventColumns, int]]) -> None:
        parts = list(batch)
        horizon = time.time_ns() // 1000 - self.horizon_us
        tsf = self.source.timestamp_field
        skipped = late = 0
        keys: list[str] = []
        owner: list[int] = []
        sel: list[EventColumns] = []
        for p in parts:
            ev = batch[p][0]
            fresh = ev.offsets > self.watermarks[p]
            on_time = ev.columns[tsf] >= horizon
            skipped += int((~fresh).sum())
            late += int((fresh & ~on_time).sum())
            ix = np.nonzero(fresh & on_time)[0]
            keys += self._keys(ev.columns, ix)
            owner += [p] * len(ix)
            sel.append(EventColumns(ev.offsets[ix], {
                k: ev.columns[k][ix] for k in (tsf, *self.value_fields)}))
        applied = len(keys)
        cache = self.cache
        # load the rings this batch needs and the cache lacks, in one round trip
        need: dict[str, int] = {}
        for key, p in zip(keys, owner, strict=True):
            if key not in cache.rows and key not in need:
                need[key] = p
        if need:
            nkeys = list(need)
            cache.add(nkeys, list(need.values()), self.sink.load(nkeys, self.fields))
        rows_of = cache.rows
        rows = np.fromiter((rows_of[k] for k in keys), dtype=np.int64, count=applied)
        ts_a = np.concatenate([e.columns[tsf] for e in sel]).astype(np.int64, copy=False)
        seq_a = np.concatenate([e.offsets for e in sel])
        cols = {f: np.concatenate([e.columns[f] for e in sel]).astype(np.float64, copy=False)
                for f in self.value_fields}
        unique_rows = np.unique(rows, return_inverse=True)
        for plan, arr in zip(self.plans, cache.arrays, strict=True):
            fold_batch(arr, plan, rows, ts_a, seq_a, cols, unique_rows)
        cache.dirty[rows] = True
        c = self._counts
        c[0] += applied
        c[1] += skipped
        c[2] += late
        if applied:
            newest = int(ts_a.max())
            c[3] = newest if c[3] is None else max(c[3], newest)


def _timed(fn, *args):
    out = fn(*args)
    return out, time.time()


def _values(col, ix: np.ndarray) -> list:
    """Python values of a column at ``ix`` (lists for strings, numpy arrays otherwise)."""
    if isinstance(col, list):
        return [col[i] for i in ix.tolist()]
    return col[ix].tolist()
