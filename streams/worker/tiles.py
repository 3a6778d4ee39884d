"""Folding a batch of events into tile rings (pure: numpy, no I/O).

The rings of one (view, hop) for every cached entity live in one numpy structured array whose
row ``r`` is entity ``r``'s ring *byte for byte as stored in Redis* (the record
``features.online.codec.RingCodec.dtype``): decoding is ``frombuffer`` and encoding is
``tobytes``, and a batch folds with whole-array operations
instead of a Python loop per event and ring.

``fold_batch`` works out which tile slot each event lands in and leaves the merging to each
aggregation's own kernel (``Aggregation.fold_events``, ``features.semantics.kernels``), which
gives the bits of the algebra's event-by-event merges (``tests/streams/test_tiles.py``).

A ring keeps the newest ``slots`` tiles: after a batch, a tile ``<= top - slots`` (``top`` the
ring's newest tile) is emptied, and an event whose tile is that old is skipped — no read at or
after the ring's newest tile can see it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from features.definitions import FeatureView
from features.online.codec import EMPTY_TILE, NO_EVENT
from features.online.layout import HopLayout, ViewLayout
from features.semantics.aggregations import Aggregation, get_aggregation
from features.semantics.windows import tile_of


@dataclass(frozen=True)
class HopPlan:
    """How a batch touches one (view, hop) ring: tile size, ring length, IR parts to update."""

    layout: HopLayout
    ops: tuple[tuple[Aggregation, int, str | None], ...]  # aggregation, first IR index, field

    @property
    def dtype(self) -> np.dtype:
        """One ring as a numpy record: the stored bytes (``RingCodec.dtype``)."""
        return self.layout.codec.dtype

    @cached_property
    def empty_ring(self) -> bytes:
        return self.layout.encode(NO_EVENT, {})

    @cached_property
    def empty(self) -> np.ndarray:
        return np.array(self.layout.empty_values(), dtype=np.float64)


def plan_views(views: list[FeatureView]) -> list[HopPlan]:
    """One ``HopPlan`` per (view, hop) ring of every view on a source."""
    plans = []
    for view in views:
        for hl in ViewLayout(view).hops.values():
            ops = tuple(
                (get_aggregation(fn), start, fld)
                for (fn, fld), start in zip(hl.parts, hl.offsets, strict=True)
            )
            plans.append(HopPlan(hl, ops))
    return plans


def fields_needed(plans: list[HopPlan]) -> list[str]:
    """Event fields the folds read (as float64 columns)."""
    return sorted({fld for p in plans for _, _, fld in p.ops if fld is not None})


def fold_batch(
    rings: np.ndarray,
    plan: HopPlan,
    rows: np.ndarray,
    ts: np.ndarray,
    seq: np.ndarray,
    cols: dict[str, np.ndarray],
    unique_rows: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Merge events (entity row, event time µs, log position, field columns), in log order,
    into ``rings`` (a structured array of ``plan.dtype``) in place. ``unique_rows`` is
    ``np.unique(rows, return_inverse=True)`` when the caller has it (same for every plan)."""
    if len(rows) == 0:
        return
    S = plan.layout.slots
    idx2 = rings["t"]["i"]  # (rows, slots) views into the records
    val3 = rings["t"]["v"]
    tidx = tile_of(ts, plan.layout.hop)
    urows, rinv = unique_rows or np.unique(rows, return_inverse=True)
    top = idx2[urows].max(axis=1)
    np.maximum.at(top, rinv, tidx)
    keep = tidx > top[rinv] - S
    if not keep.all():
        if not keep.any():
            return
        rows, ts, seq, tidx = rows[keep], ts[keep], seq[keep], tidx[keep]
        cols = {k: v[keep] for k, v in cols.items()}
    slot = tidx % S
    upos, inv = np.unique(rows * S + slot, return_inverse=True)
    ur, us = upos // S, upos % S
    cur = idx2[ur, us]
    tgt = cur.copy()
    np.maximum.at(tgt, inv, tidx)
    tiles = val3[ur, us]  # a copy: (tiles, width)
    tiles[tgt > cur] = plan.empty  # the slot moves on to a newer tile
    on = tidx == tgt[inv]  # events of an older tile than their slot's newest are gone
    if not on.all():
        inv, ts, seq = inv[on], ts[on], seq[on]
        cols = {k: v[on] for k, v in cols.items()}
    for agg, a, fld in plan.ops:
        agg.fold_events(tiles[:, a:a + agg.width], inv, ts, seq,
                        None if fld is None else cols[fld])
    idx2[ur, us] = tgt
    val3[ur, us] = tiles
    np.maximum.at(rings["newest"], rows, ts)
    _prune(idx2, val3, urows, S, plan.empty)


def _prune(idx2: np.ndarray, val3: np.ndarray, rows: np.ndarray, S: int,
           empty: np.ndarray) -> None:
    """Empty the tiles a ring no longer holds (older than its newest tile - slots)."""
    i = idx2[rows]
    top = i.max(axis=1)
    stale = (i <= (top - S)[:, None]) & (i != EMPTY_TILE)
    if stale.any():
        r, s = np.nonzero(stale)
        idx2[rows[r], s] = EMPTY_TILE
        val3[rows[r], s] = empty


class RingCache:
    """The decoded rings of a source's entities, one structured array per plan.

    Rows are handed out per entity key and remembered with the partition that owns the
    entity, so a revoked or fenced-off partition's rows can be dropped and reloaded. The arrays
    start large (zeroed pages cost no memory until a row is written) and double when full:
    each doubling copies every ring, a pause worth avoiding on the fresh path.
    """

    def __init__(self, plans: list[HopPlan], capacity: int = 65536) -> None:
        self.plans = plans
        self.rows: dict[str, int] = {}
        self.keys: list[str | None] = []
        self.partition = np.full(capacity, -1, dtype=np.int32)
        self.expire_due = np.zeros(capacity, dtype=np.float64)  # when to refresh the key's TTL
        self.dirty = np.zeros(capacity, dtype=bool)  # folded since the last commit
        self.arrays = [np.zeros(capacity, dtype=p.dtype) for p in plans]
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self.rows)

    def _grow(self, need: int) -> None:
        cap = len(self.partition)
        if need <= cap:
            return
        new = max(need, cap * 2)

        def bigger(arr: np.ndarray, fill: int = 0) -> np.ndarray:
            out = np.zeros(new, dtype=arr.dtype)  # lazily zeroed: new rows cost on first use
            if fill:
                out[cap:] = fill
            out[:cap] = arr
            return out

        self.partition = bigger(self.partition, -1)
        self.expire_due = bigger(self.expire_due)
        self.dirty = bigger(self.dirty)
        self.arrays = [bigger(arr) for arr in self.arrays]

    def add(self, keys: list[str], partitions: list[int],
            blobs: list[list[bytes | None]]) -> None:
        """Cache entities from their stored rings (``blobs[i][j]``: key i, plan j; None = new)."""
        if not keys:
            return
        rows = []
        for key in keys:
            if self._free:
                r = self._free.pop()
                self.keys[r] = key
            else:
                r = len(self.keys)
                self.keys.append(key)
            self.rows[key] = r
            rows.append(r)
        self._grow(len(self.keys))
        rows_a = np.array(rows, dtype=np.int64)
        self.partition[rows_a] = partitions
        self.expire_due[rows_a] = 0.0
        self.dirty[rows_a] = False
        for j, (plan, arr) in enumerate(zip(self.plans, self.arrays, strict=True)):
            size, empty = plan.dtype.itemsize, plan.empty_ring
            raw = b"".join(
                b[j] if b[j] is not None and len(b[j]) == size else empty for b in blobs
            )
            arr[rows_a] = np.frombuffer(raw, dtype=plan.dtype)

    def drop(self, partitions: list[int]) -> None:
        """Forget the entities of these partitions (revoked, or another writer moved them)."""
        self._release(np.nonzero(np.isin(self.partition, partitions))[0].tolist())

    def evict(self, older_than_us: int) -> int:
        """Forget clean rows whose newest event is older than ``older_than_us`` (no read at
        "now" can see them; if the entity comes back its rings are reloaded). Only while no
        write is in flight: an evicted row must be in Redis as cached. Returns rows freed."""
        n = len(self.keys)
        if n == 0:
            return 0
        newest = np.max(np.stack([a["newest"][:n] for a in self.arrays]), axis=0)
        live = np.array([k is not None for k in self.keys], dtype=bool)
        old = np.nonzero((newest < older_than_us) & live & ~self.dirty[:n])[0].tolist()
        self._release(old)
        return len(old)

    def _release(self, rows: list[int]) -> None:
        """Free cached rows (their keys are no longer cached; the rows are reused)."""
        for r in rows:
            key = self.keys[r]
            if key is not None:
                del self.rows[key]
                self.keys[r] = None
                self._free.append(r)
            self.partition[r] = -1
            self.dirty[r] = False

    def encode(self, rows: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """The rows' stored ring bytes, per plan a ``(rows, ring size)`` uint8 matrix, and
        which rings have seen an event (the others are not written)."""
        subs = [arr[rows] for arr in self.arrays]
        present = np.stack([s["newest"] != NO_EVENT for s in subs], axis=1).reshape(
            len(rows), len(subs))
        return [s.view(np.uint8).reshape(len(rows), s.dtype.itemsize) for s in subs], present
