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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import orjson

from features.definitions import EventSource, FeatureView
from features.errors import TesseraError
from features.event_columns import EventColumns
from features.online.backend import OnlineBackend
from features.online.layout import APPLIED_FIELD, ViewLayout, Watermark, entity_key, offset_key
from streams.partitioner import home_partition
from streams.worker.checkpoint import LOST, judge_fence
from streams.worker.landing import Landing
from streams.worker.tiles import HopPlan, RingCache, fields_needed, fold_batch, plan_views

log = logging.getLogger("tessera.worker")

# HSET keeps a key's TTL, so the TTL is refreshed at most once an hour per entity: a key lives
# between ttl and ttl + 1 h after its last write.
TTL_REFRESH_S = 3600
# Cached rings of entities idle beyond the late horizon are dropped this often, so the worker's
# memory follows the active entities, as Redis's does.
EVICT_EVERY_S = 60.0
# stream ids at or above this are forwarded streams (partitions are numbered below it)
REP_BASE = 1 << 16


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
    fences: dict[int, tuple[Watermark, Watermark]]  # stream -> (expected, new)
    rep: dict[int, int]  # home partition -> last repartition-topic offset written
    due: np.ndarray
    rows: np.ndarray  # cache rows written
    applied: list[bytes]  # their new ~applied
    result: Future
    submitted_at: float = field(default_factory=time.time)
    landings: list[Landing] = field(default_factory=list)  # stamped when it lands


@dataclass
class OnlineStats:
    applied: int = 0
    skipped_replay: int = 0
    late: int = 0
    fence_retries: int = 0
    forwarded: int = 0  # sent to their home partition (repartition.Forwarder)
    newest_ts: int | None = None  # µs, newest event applied (freshness metric)


class OnlineWriter:
    """Applies decoded events of one source to Redis, exactly once in effect."""

    def __init__(
        self,
        source: EventSource,
        views: list[FeatureView],
        sink: OnlineBackend,
        group: str,
        allowed_lateness_us: int,
        forward: Callable[[int, int, list[int], list[str], EventColumns], None] | None = None,
        partitions: int | None = None,
    ) -> None:
        self.source = source
        self.n = partitions or source.partitions  # the topic's, which may differ from the spec
        # misrouted events go to their home partition (repartition.Forwarder.forward); without
        # a forwarder every event counts where it arrives (tests of one writer)
        self.forward = forward
        self._homes: dict[str, int] = {}
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
        # per stream (``sid``): the source topic's partition p is stream p; events forwarded
        # from partition o to home partition h are stream REP_BASE * (h + 1) + o (``rep_sid``)
        self.watermarks: dict[int, int] = {}  # stream -> last offset applied
        self.marks: dict[int, Watermark] = {}  # stream -> the stored value (epoch, print)
        self.rep_landed: dict[int, int] = {}  # home partition -> last repartition offset in Redis
        self.cache = RingCache(self.plans)
        # cache row -> the key's ~applied as Redis holds it (read, or last written by us): what
        # its next fenced write expects (features.online.backend.scripts.WRITE)
        self._row_mark: dict[int, bytes] = {}
        # rows whose ~applied was past our watermark when loaded: checked in every batch until
        # the watermark passes it, not only in the batch that loaded them (a key loaded in one
        # small batch and met again in the next must still skip what it holds)
        self._maybe_ahead: set[int] = set()
        self._parsed: dict[bytes, dict[int, tuple[int, int]]] = {}
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
            self._kafka_keys = lambda c, ix: [str(v) for v in _values(c[k0], ix)]
        else:
            self._keys = lambda c, ix: [
                entity_key(ent, vs) for vs in zip(*(_values(c[k], ix) for k in keys), strict=True)]
            self._kafka_keys = lambda c, ix: [  # key_of()'s form
                orjson.dumps([str(v) for v in vs]).decode()
                for vs in zip(*(_values(c[k], ix) for k in keys), strict=True)]

    # -- streams ---------------------------------------------------------------------------

    @staticmethod
    def rep_sid(home: int, origin: int) -> int:
        """The stream of events forwarded from partition ``origin`` to ``home``."""
        return REP_BASE * (home + 1) + origin

    @staticmethod
    def owner(sid: int) -> int:
        """The home partition whose entities a stream's events belong to."""
        return sid if sid < REP_BASE else sid // REP_BASE - 1

    def home_sids(self, home: int) -> list[int]:
        """Every stream that writes the entities of ``home``: a write of those entities
        fences on all of them, so a move of either topic's partition is noticed."""
        return [home, *(self.rep_sid(home, o) for o in range(self.n))]

    def _home(self, kafka_key: str, redis_key: str) -> int:
        """The home partition of an entity (cached by its Redis key)."""
        if len(self._homes) > 4 * max(len(self.cache), 65536):
            self._homes.clear()
        h = self._homes[redis_key] = home_partition(kafka_key, self.n)
        return h

    def forget(self, partitions: list[int]) -> None:
        """Commit what is pending, then drop the partitions' cached state (revoked)."""
        self.commit()
        for p in partitions:
            for sid in self.home_sids(p):
                self.watermarks.pop(sid, None)
                self.marks.pop(sid, None)
            self.rep_landed.pop(p, None)
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

    def offset_key(self, sid: int) -> str:
        if sid < REP_BASE:
            return offset_key(self.group, self.source.topic, sid)
        home, origin = sid // REP_BASE - 1, sid % REP_BASE
        return f"{offset_key(self.group, self.source.repartition_topic, home)}.{origin}"

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

    def fold(self, batch: dict[int, tuple[EventColumns, int]],
             landing: Landing | None = None) -> Landing:
        """Fold ``{partition: (valid events, last offset of the batch)}`` into the cache; it
        reaches Redis at the next ``commit``. The returned ``Landing`` is stamped when it
        does (the event log's ``_applied_ts``)."""
        landing = landing or Landing()
        if not batch:
            return landing
        self._load_watermarks({s for sid in batch for s in self.home_sids(self.owner(sid))})
        self._pending.append(batch)
        self._landings.append(landing)
        self._pending_events += sum(len(b[0]) for b in batch.values())
        self._fold(batch, landing)
        return landing

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
        rep: dict[int, int] = {}  # home -> last repartition-topic offset in these batches
        for batch in self._pending:
            for sid, (_, off, fp, kafka_off) in batch.items():
                if off > last.get(sid, -1):
                    last[sid], prints[sid] = off, fp
                if sid >= REP_BASE:
                    h = self.owner(sid)
                    rep[h] = max(rep.get(h, -1), kafka_off)
        fences: dict[int, tuple[Watermark, Watermark]] = {}
        for h in {self.owner(sid) for sid in last}:
            for sid in self.home_sids(h):
                old = self.marks[sid]
                off = last.get(sid, -1)
                new = Watermark(off, old.epoch, prints[sid]) if off > old.offset else old
                fences[sid] = (old, new)
        cache = self.cache
        rows = np.nonzero(cache.dirty)[0]
        cache.dirty[rows] = False
        expire = cache.expire_due[rows] <= time.time()
        due = rows[expire]
        # what each key's rings hold once written: everything of its home's streams up to the
        # new watermarks (the batches carry every event of those streams above the old ones)
        home_mark = {h: _applied(self.home_sids(h), fences) for h in {self.owner(s) for s in last}}
        row_list = rows.tolist()
        owners = cache.partition[rows].tolist()
        mark = self._row_mark
        expected = [mark.get(r, b"") for r in row_list]
        applied = [home_mark[h] if h in home_mark else _applied(self.home_sids(h), fences)
                   for h in owners]
        if self._maybe_ahead:
            # a key ahead of our watermark keeps its own marks where they are higher: its
            # rings still hold those events (we skipped them), and a mark moved back would
            # have the next batch apply them again
            for i, r in enumerate(row_list):
                if r in self._maybe_ahead and expected[i]:
                    applied[i] = _merge_marks(self._marks_of(expected[i]), applied[i])
        rings, present = cache.encode(rows)
        args = ([cache.keys[r] for r in row_list], self.fields, rings, present,
                expire, self.ttl_s + TTL_REFRESH_S,
                {self.offset_key(sid): f for sid, f in fences.items()}, expected, applied)
        # a key with no ring to write gets no command: its ~applied stays as it was
        sent = present.any(axis=1)
        self._inflight = _Job(self._pending, self._counts, last, fences, rep, due, rows[sent],
                              [a for a, w in zip(applied, sent.tolist(), strict=True) if w],
                              self._pool.submit(_timed, self.sink.commit, *args),
                              landings=self._landings)
        self._inflight.result.add_done_callback(_stamp(self._landings))
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
            mark = self._row_mark
            for r, m in zip(job.rows.tolist(), job.applied, strict=True):
                mark[r] = m
            cache.expire_due[job.due] = time.time() + TTL_REFRESH_S
            c = job.counts
            self.stats.applied += c[0]
            self.stats.skipped_replay += c[1]
            self.stats.late += c[2]
            if c[3] is not None:
                self.stats.newest_ts = max(self.stats.newest_ts or c[3], c[3])
            for sid, (_, new) in job.fences.items():
                self.set_mark(sid, new)
            for h, off in job.rep.items():
                self.rep_landed[h] = max(self.rep_landed.get(h, -1), off)
            if time.monotonic() - self._evicted_at > EVICT_EVERY_S:
                self._evicted_at = time.monotonic()
                cache.evict(time.time_ns() // 1000 - self.horizon_us)
            return
        verdict, sids = judge_fence(
            job.fences, {sid: stale.get(self.offset_key(sid)) for sid in job.fences})
        if verdict == LOST:
            lost = {self.owner(sid) for sid in sids}
            # the batches are in the offline buffer or the log: the rebuild folds them
            _land_now(job.landings + self._landings)
            self._reset_pending()
            raise StoreLost(self.source.name, sorted(lost),
                            "its offset watermark is gone or went backwards in Redis")
        self.stats.fence_retries += 1
        batches = job.batches + self._pending
        landings = job.landings + self._landings
        parts = sorted({self.owner(sid) for b in batches for sid in b})
        cache.drop(parts)
        for p in parts:
            for sid in self.home_sids(p):
                self.watermarks.pop(sid, None)
                self.marks.pop(sid, None)
        self._reset_pending()
        for batch, landing in zip(batches, landings, strict=True):
            self.fold(batch, landing)

    def restart_stream(self, sid: int, epoch: int) -> None:
        """A stream's origin started a new log epoch: its offsets restart at 0."""
        self.commit()
        mark = Watermark(-1, epoch, 0)
        self.sink.set_watermarks({self.offset_key(sid): mark})
        self.set_mark(sid, mark)

    def check_store(self) -> None:
        """Raise ``StoreLost`` if Redis no longer holds a watermark this worker wrote (run when
        idle: a store flushed while no event arrives must be noticed all the same)."""
        if self._inflight is not None:
            return
        parts = [p for p, m in self.marks.items() if m.offset >= 0 and p < REP_BASE]
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
        _land_now(self._landings)  # the rebuild applied them
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
            _land_now(job.landings)  # landed, or applied by the rebuild

    def _marks_of(self, raw: bytes) -> dict[int, tuple[int, int]]:
        """A key's ``~applied``, parsed: stream -> (epoch, offset), cached by value."""
        marks = self._parsed.get(raw)
        if marks is None:
            if len(self._parsed) > 4096:
                self._parsed.clear()
            marks = self._parsed[raw] = _parse_marks(raw)
        return marks

    def _ahead(self, raw: bytes) -> dict[int, float]:
        """Streams where a loaded key's ``~applied`` is past our watermark: stream -> last
        offset the key holds (infinite: a newer epoch than ours)."""
        marks = self._marks_of(raw)
        out: dict[int, float] = {}
        for sid, (epoch, off) in marks.items():
            cur = self.marks.get(sid)
            if cur is None:
                continue
            if epoch > cur.epoch:
                out[sid] = float("inf")
            elif epoch == cur.epoch and off > cur.offset:
                out[sid] = off
        return out

    def _route(self, p: int, ev: EventColumns, ix: np.ndarray,
               keys: list[str]) -> tuple[np.ndarray, list[str]]:
        """Forward the events at ``ix`` (Redis keys ``keys``) whose home is not ``p``; returns
        the rest. Homes are cached per key: one dict lookup per event."""
        get = self._homes.get
        homes = [get(k) for k in keys]
        if None in homes:
            kk = self._kafka_keys(ev.columns, ix)
            homes = [h if h is not None else self._home(k, rk)
                     for h, k, rk in zip(homes, kk, keys, strict=True)]
        away = np.fromiter((h != p for h in homes), dtype=bool, count=len(homes))
        if not away.any():
            return ix, keys
        j = np.nonzero(away)[0]
        jl = j.tolist()
        self.forward(p, self.marks[p].epoch, [homes[i] for i in jl],
                     self._kafka_keys(ev.columns, ix[j]), ev.take(ix[j]))
        self.stats.forwarded += len(jl)
        stay = np.nonzero(~away)[0].tolist()
        return ix[~away], [keys[i] for i in stay]

    def _reset_pending(self) -> None:
        self._pending: list[dict[int, tuple[EventColumns, int]]] = []
        self._landings: list[Landing] = []  # one per pending batch
        self._pending_events = 0
        self._counts: list = [0, 0, 0, None]  # applied, skipped, late, newest ts

    def _fold(self, batch: dict[int, tuple], landing: Landing) -> None:
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
            landing.on[p] = on_time
            skipped += int((~fresh).sum())
            late += int((fresh & ~on_time).sum())
            ix = np.nonzero(fresh & on_time)[0]
            kp = self._keys(ev.columns, ix)
            if p < REP_BASE and self.forward is not None and len(ix):
                ix, kp = self._route(p, ev, ix, kp)
            keys += kp
            owner += [self.owner(p)] * len(ix)
            sel.append(EventColumns(ev.offsets[ix], {
                k: ev.columns[k][ix] for k in (tsf, *self.value_fields)}))
        applied = len(keys)
        cache = self.cache
        # load the rings this batch needs and the cache lacks, in one round trip
        need: dict[str, int] = {}
        for key, p in zip(keys, owner, strict=True):
            if key not in cache.rows and key not in need:
                need[key] = p
        ahead: dict[str, dict[int, float]] = {}
        rows_of = cache.rows
        if need:
            nkeys = list(need)
            loaded = self.sink.load(nkeys, [*self.fields, APPLIED_FIELD])
            cache.add(nkeys, list(need.values()), loaded)  # the last column is not a ring
            for key, blobs in zip(nkeys, loaded, strict=True):
                m = blobs[-1] or b""
                row = rows_of[key]
                self._row_mark[row] = m
                self._maybe_ahead.discard(row)  # a reused row starts afresh
                if m:
                    adv = self._ahead(m)
                    if adv:
                        ahead[key] = adv
                        self._maybe_ahead.add(row)
        if self._maybe_ahead:
            for key in set(keys).difference(need):
                row = rows_of[key]
                if row in self._maybe_ahead:
                    m = self._row_mark.get(row)
                    adv = self._ahead(m) if m else {}
                    if adv:
                        ahead[key] = adv
                    else:
                        self._maybe_ahead.discard(row)  # the watermark has passed it
        rows = np.fromiter((rows_of[k] for k in keys), dtype=np.int64, count=applied)
        ts_a = np.concatenate([e.columns[tsf] for e in sel]).astype(np.int64, copy=False)
        seq_a = np.concatenate([e.offsets for e in sel])
        cols = {f: np.concatenate([e.columns[f] for e in sel]).astype(np.float64, copy=False)
                for f in self.value_fields}
        if ahead:
            # keys written past their partition's watermark (a crash between a batch's key
            # writes and its watermark, or another writer): their events up to their own
            # ~applied are in them already
            sids = np.repeat(np.array(parts, dtype=np.int64), [len(e.offsets) for e in sel])
            keep = np.fromiter(
                (k not in ahead or o > ahead[k].get(s, -1)
                 for k, s, o in zip(keys, sids.tolist(), seq_a.tolist(), strict=True)),
                dtype=bool, count=len(keys))
            if not keep.all():
                ki = np.nonzero(keep)[0]
                keys = [keys[i] for i in ki.tolist()]
                rows, ts_a, seq_a = rows[ki], ts_a[ki], seq_a[ki]
                cols = {f: v[ki] for f, v in cols.items()}
                skipped += applied - len(keys)
                applied = len(keys)
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


def _applied(sids: list[int], fences: dict[int, tuple[Watermark, Watermark]]) -> bytes:
    """A key's ``~applied`` after a write with these fences: ``sid:epoch:offset`` of every
    stream of its home partition that has applied anything, in stream order."""
    out = []
    for sid in sids:
        new = fences[sid][1]
        if new.offset >= 0 or new.epoch:
            out.append(b"%d:%d:%d" % (sid, new.epoch, new.offset))
    return b",".join(out)


def _parse_marks(raw: bytes) -> dict[int, tuple[int, int]]:
    return {int(a): (int(b), int(c)) for a, b, c in (t.split(b":") for t in raw.split(b","))}


def _merge_marks(held: dict[int, tuple[int, int]], new: bytes) -> bytes:
    """``new`` with each stream's mark raised to what the key ``held`` where that is later
    (epoch first, then offset), streams of either kept, in stream order."""
    out = dict(held)
    for sid, mark in _parse_marks(new).items() if new else ():
        if mark > out.get(sid, (-1, -1)):
            out[sid] = mark
    return b",".join(b"%d:%d:%d" % (sid, *out[sid]) for sid in sorted(out))


def _stamp(landings: list[Landing]) -> Callable[[Future], None]:
    """A write's done-callback (in its thread): stamp its batches when it went through."""

    def done(result: Future) -> None:
        if result.exception() is not None:
            for landing in landings:
                landing.fail()
            return
        stale, landed_at = result.result()
        if stale is None:
            for landing in landings:
                landing.land(int(landed_at * 1_000_000))

    return done


def _land_now(landings: list[Landing]) -> None:
    now = time.time_ns() // 1000
    for landing in landings:
        landing.land(now)


def _timed(fn, *args):
    out = fn(*args)
    return out, time.time()


def _values(col, ix: np.ndarray) -> list:
    """Python values of a column at ``ix`` (lists for strings, numpy arrays otherwise)."""
    if isinstance(col, list):
        return [col[i] for i in ix.tolist()]
    return col[ix].tolist()
