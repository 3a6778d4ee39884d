"""Selecting aggregations: min and max of the field."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from features.semantics.kernels.base import INF, IR, Aggregation, range_reduce


class _Extreme(Aggregation):
    """``merge`` keeps ``a`` unless ``b`` is strictly better (a NaN in ``a`` loses, as the
    comparison is false); ``bound`` is the empty IR, worse than every value."""

    bound: float = INF
    ufunc: np.ufunc = np.minimum
    vector_min_rows = 8  # one reduction over all tiles at once: worth it from a few rings

    def empty(self) -> IR:
        return (self.bound,)

    def prepare(self, value: float, ts: int, seq: int) -> IR:
        return (float(value),)

    def finalize(self, ir: IR) -> float | None:
        return None if ir[0] == self.bound else ir[0]

    def fold_events(self, tiles, inv, ts, seq, values) -> None:
        # numpy's at-reductions, as the worker has always folded: equal in value to the merge
        # chain, not always in bits -- a NaN sticks where ``merge`` drops it at the next
        # event, and of 0.0 and -0.0 either may stay (``merge`` keeps the first)
        self.ufunc.at(tiles[:, 0], inv, values)

    def merge_tiles(self, v, mask):
        x = np.where(mask, v[:, :, 0], self.bound)
        # numpy treats NaN differently from ``merge``'s comparison: those rows go scalar
        redo = np.isnan(x).any(axis=1)
        r = x.min(axis=1) if self.ufunc is np.minimum else x.max(axis=1)
        return r[:, None], redo if redo.any() else None

    def finalize_list(self, ir: np.ndarray) -> list:
        b = self.bound
        return [None if a == b else a for a in ir[:, 0].tolist()]

    def reduce_ranges(self, values, lo, hi):
        return range_reduce(self.ufunc, values, lo, hi, np.nan), hi > lo


class Min(_Extreme):
    """Smallest value of the field; null when empty."""

    name = "min"
    bound = INF
    ufunc = np.minimum

    def merge(self, a: IR, b: IR) -> IR:
        return a if a[0] <= b[0] else b

    def read_tiles(self, records: Sequence[Sequence[float]], j: int) -> float | None:
        m = INF
        for r in records:
            x = r[j]
            if not m <= x:
                m = x
        return None if m == INF else m


class Max(_Extreme):
    """Largest value of the field; null when empty."""

    name = "max"
    bound = -INF
    ufunc = np.maximum

    def merge(self, a: IR, b: IR) -> IR:
        return a if a[0] >= b[0] else b

    def read_tiles(self, records: Sequence[Sequence[float]], j: int) -> float | None:
        m = -INF
        for r in records:
            x = r[j]
            if not m >= x:
                m = x
        return None if m == -INF else m
