"""Compiled read-time folds: every requested feature of one hop ring from one ``struct`` unpack.

``fold.fold_view`` is the readable definition (decode the ring into a dict, merge tile by
tile); this module computes the same values on the serving hot path with less Python per
feature: the whole ring is unpacked at once, the tiles inside the window are found once per ring,
and count/sum/mean/min/max fold with builtins in the same tile order and with the same
comparison as their ``merge``. Other aggregations fold through their own ``merge``. Equality with
``fold_view`` is a property test (``tests/features/online/test_fastfold.py``).
"""

from __future__ import annotations

import struct

from features.online.fold import fold_view
from features.online.layout import FeatureSlot, HopLayout
from features.semantics.aggregations import get_aggregation

_INF = float("inf")


def _fold_min(flat: tuple, idx: list[int]) -> float | None:
    m = _INF
    for i in idx:
        v = flat[i]
        if not m <= v:
            m = v
    return None if m == _INF else m


def _fold_max(flat: tuple, idx: list[int]) -> float | None:
    m = -_INF
    for i in idx:
        v = flat[i]
        if not m >= v:
            m = v
    return None if m == -_INF else m


class RingFold:
    """Folds the features ``slots`` (output column, slot) that live in one hop ring."""

    def __init__(self, hop: HopLayout, slots: list[tuple[int, FeatureSlot]]) -> None:
        self.layout = hop
        self.field = hop.field
        self.hop = hop.hop
        stride = hop.width + 1
        self.ring = struct.Struct("<q" + ("q" + "d" * hop.width) * hop.slots)
        self.stride = stride
        self.bases = [1 + s * stride for s in range(hop.slots)]
        self.slots = slots
        # (column, tiles back from the current one, fn, first value index in a record, agg)
        self.plan = [
            (col, s.window // hop.hop, s.fn, 1 + s.start, get_aggregation(s.fn))
            for col, s in slots
        ]
        self.span = max(p[1] for p in self.plan)

    def fold(self, blob: bytes | None, t: int, vals: list, miss: list) -> int | None:
        """Write values and missing flags into ``vals``/``miss``; return the ring's newest ts."""
        if not blob:
            for col, _, _, _, agg in self.plan:
                vals[col] = agg.finalize(agg.empty())
                miss[col] = True
            return None
        if len(blob) != self.ring.size:  # not this layout's shape: take the generic path
            v, m, newest = fold_view([s for _, s in self.slots], {self.field: blob}, t)
            for (col, _), value, flag in zip(self.slots, v, m, strict=True):
                vals[col] = value
                miss[col] = flag
            return newest
        flat = self.ring.unpack(blob)
        kt = t // self.hop
        first = kt - self.span
        # EMPTY_TILE (-2**63) is below any ``first``, so empty slots drop out here too
        recs = sorted(
            [(k, b) for k, b in zip(flat[1::self.stride], self.bases, strict=True)
             if first <= k <= kt]
        )
        for col, span, fn, off, agg in self.plan:
            lo = kt - span
            idx = [b + off for k, b in recs if k >= lo]
            if fn == "count":
                value = int(sum([flat[i] for i in idx], 0.0))
            elif fn == "sum":
                value = sum([flat[i] for i in idx], 0.0)
            elif fn == "mean":
                c = sum([flat[i] for i in idx], 0.0)
                value = sum([flat[i + 1] for i in idx], 0.0) / c if c else None
            elif fn == "min":
                value = _fold_min(flat, idx)
            elif fn == "max":
                value = _fold_max(flat, idx)
            else:
                w = agg.width
                acc = agg.empty()
                for i in idx:
                    acc = agg.merge(acc, flat[i:i + w])
                value = agg.finalize(acc)
            vals[col] = value
            miss[col] = False
        return flat[0]
