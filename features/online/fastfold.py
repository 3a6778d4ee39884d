"""Compiled read-time folds: every requested feature of one hop ring from a few ``struct`` unpacks.

``fold.fold_view`` is the readable definition (decode the ring into a dict, merge tile by
tile); this module computes the same values on the serving hot path with less Python per
feature: the ring's tile indices are unpacked at once, only the tiles inside the longest window
are decoded (once per ring), and each aggregation folds them with its own kernels
(``read_tiles`` for one ring, ``merge_tiles`` for many at once; ``features.semantics.kernels``)
in the same tile order as its ``merge``. Equality with ``fold_view`` is a property test
(``tests/features/online/test_fastfold.py``), and so is the exact-read rule of ``fold`` (a read
at or before the ring's newest event is exact or raises ``InexactReadError``): on the hot path
it costs one integer comparison per ring.
"""

from __future__ import annotations

import numpy as np

from features.online.fold import InexactReadError, fold_view, past_last_tile
from features.online.layout import FeatureSlot, HopLayout
from features.semantics.aggregations import get_aggregation
from features.semantics.windows import tile_of

VECTOR_MIN_ROWS = 8  # below this many rings nothing is folded with numpy


class RingFold:
    """Folds the features ``slots`` (output column, slot) that live in one hop ring."""

    def __init__(self, hop: HopLayout, slots: list[tuple[int, FeatureSlot]]) -> None:
        self.layout = hop
        self.field = hop.field
        self.hop = hop.hop
        codec = hop.codec  # the ring's bytes: features.online.codec
        self.ring = codec.ring
        self.slots = slots
        # (column, tiles back from the current one, first IR index in a record, aggregation)
        self.plan = [
            (col, s.window // hop.hop, s.start, get_aggregation(s.fn)) for col, s in slots
        ]
        self.span = max(p[1] for p in self.plan)
        self.widest = max(slots, key=lambda cs: cs[1].window)[1].name  # named by past reads
        # the scalar fold unpacks the header and tile indices, then only the tiles in a window
        self.heads = codec.heads
        self.record = codec.values
        self.value_offsets = codec.value_offsets
        # what every feature of the ring is when no tile falls in its window (ring present)
        self.empty = [(col, agg.finalize(agg.empty())) for col, _, _, agg in self.plan]
        self._subs: dict[tuple[int, ...], RingFold] = {}  # the features folded ring by ring
        self.dtype = codec.dtype

    def fold(
        self, blob: bytes | None, t: int, vals: list, miss: list, exact: bool = True
    ) -> int | None:
        """Write values and missing flags into ``vals``/``miss``; return the ring's newest ts.

        ``exact``: a read at or before the ring's newest event is exact or raises
        ``InexactReadError`` (``features.online.fold``); False folds up to ``tile(t)``
        whatever the ring holds (reads at "now", where a producer's clock may run ahead)."""
        if not blob:
            for col, value in self.empty:
                vals[col] = value
                miss[col] = True
            return None
        if len(blob) != self.ring.size:  # not this layout's shape: take the generic path
            v, m, newest = fold_view([s for _, s in self.slots], {self.field: blob}, t, exact)
            for (col, _), value, flag in zip(self.slots, v, m, strict=True):
                vals[col] = value
                miss[col] = flag
            return newest
        heads = self.heads.unpack(blob)
        kt = tile_of(t, self.hop)
        last = kt
        if t <= heads[0] and exact:  # before the ring's newest event: exact or an error
            last = past_last_tile(self.layout, self.span, self.widest, t, heads[0],
                                  max(heads[1:]))
        first = kt - self.span
        # EMPTY_TILE (-2**63) is below any ``first``, so empty slots drop out here too
        found = sorted(
            [(k, o) for k, o in zip(heads[1:], self.value_offsets, strict=True)
             if first <= k <= last]
        )
        if not found:  # no tile in any window of this ring (often so for short windows)
            for col, value in self.empty:
                vals[col] = value
                miss[col] = False
            return heads[0]
        unpack = self.record.unpack_from
        records = [unpack(blob, o) for _, o in found]
        oldest = found[0][0]
        for col, span, j, agg in self.plan:
            lo = kt - span
            inside = records if oldest >= lo else [
                r for (k, _), r in zip(found, records, strict=True) if k >= lo]
            vals[col] = agg.read_tiles(inside, j)
            miss[col] = False
        return heads[0]

    def _fold_row(self, i: int, blob: bytes | None, t: int, vals: list, miss: list,
                  exact: bool) -> int | None:
        try:
            return self.fold(blob, t, vals, miss, exact)
        except InexactReadError as e:
            e.row = i
            raise

    def fold_many(
        self, blobs: list[bytes | None], t: int, vals: list[list], miss: list[list],
        exact: bool = True,
    ) -> list[int | None]:
        """``fold`` for many entities (row ``i`` of ``vals``/``miss`` gets ``blobs[i]``).

        For more rows than an aggregation's ``vector_min_rows``, numpy folds every row of its
        features at once: tiles sorted by index, through the aggregation's ``merge_tiles``
        (the bits of its scalar merge chain); the other features fold ring by ring, and rows a
        kernel cannot fold exactly (min/max over a NaN) fall back to ``fold``.
        An inexact read raises ``InexactReadError`` with ``row`` set to the offending row.
        """
        n = len(blobs)
        size = self.ring.size
        good = [i for i, b in enumerate(blobs) if b and len(b) == size]
        vector = [p for p in self.plan if len(good) >= p[3].vector_min_rows]
        if len(good) < VECTOR_MIN_ROWS or not vector:
            return [self._fold_row(i, b, t, v, m, exact)
                    for i, (b, v, m) in enumerate(zip(blobs, vals, miss, strict=True))]
        rest = self._sub([p[0] for p in self.plan if p not in vector])
        newest: list[int | None] = [None] * n
        if len(good) < n:
            for i in sorted(set(range(n)).difference(good)):
                newest[i] = self._fold_row(i, blobs[i], t, vals[i], miss[i], exact)
        arr = np.frombuffer(b"".join([blobs[i] for i in good]), dtype=self.dtype)
        idx = arr["t"]["i"]
        order = np.argsort(idx, axis=1, kind="stable")
        idx = np.take_along_axis(idx, order, axis=1)
        v = np.take_along_axis(arr["t"]["v"], order[:, :, None], axis=1)
        kt = tile_of(t, self.hop)
        last = kt
        heads = arr["newest"]
        if exact and (heads >= t).any():  # rows read before their newest event
            top = idx[:, -1]  # sorted: the ring's newest tile
            bad = (heads >= t) & ((t % self.hop != 0) | (kt - self.span <= top - self.layout.slots))
            past = np.flatnonzero(bad if bad.any() else heads >= t)
            r = int(past[0])
            try:
                last = past_last_tile(self.layout, self.span, self.widest, t, int(heads[r]),
                                      int(top[r]))
            except InexactReadError as e:
                e.row = good[r]
                raise
        upto = idx <= last
        masks: dict[int, np.ndarray] = {}
        redo: set[int] = set()
        results = []
        for col, span, j, agg in vector:
            mask = masks.get(span)
            if mask is None:
                mask = masks[span] = upto & (idx >= kt - span)
            ir, bad = agg.merge_tiles(v[:, :, j:j + agg.width], mask)
            if bad is not None:
                redo.update(np.flatnonzero(bad).tolist())
            results.append((col, agg.finalize_list(ir)))
        for col, out in results:
            for i, value in zip(good, out, strict=True):
                vals[i][col] = value
                miss[i][col] = False
        for i, ts in zip(good, arr["newest"].tolist(), strict=True):
            newest[i] = ts
        if rest is not None:
            for i in good:
                rest.fold(blobs[i], t, vals[i], miss[i], exact)
        for k in redo:
            i = good[k]
            newest[i] = self.fold(blobs[i], t, vals[i], miss[i], exact)
        return newest

    def _sub(self, cols: list[int]) -> RingFold | None:
        """A fold of only the features in output columns ``cols`` (None for none)."""
        if not cols:
            return None
        key = tuple(cols)
        sub = self._subs.get(key)
        if sub is None:
            sub = self._subs[key] = RingFold(self.layout, [cs for cs in self.slots
                                                           if cs[0] in key])
        return sub
