"""Spread aggregations: population ``variance`` and ``stddev`` (divide by ``n``, not ``n - 1``).

State is ``(n, mean, m2)`` merged with Chan et al.'s parallel formula, which stays accurate
where ``sum of squares - square of sum`` would cancel. Offline, ranges use an exact two-pass
form (mean first, then squared deviations from it); both give exactly 0 for identical values.
"""

from __future__ import annotations

import math

import numpy as np

from features.semantics.kernels.base import IR, Aggregation, range_reduce


class _Moments(Aggregation):
    """The shared state and kernels; subclasses say what ``m2 / n`` becomes."""

    width = 3
    exact = False

    def empty(self) -> IR:
        return (0.0, 0.0, 0.0)

    def prepare(self, value: float, ts: int, seq: int) -> IR:
        return (1.0, float(value), 0.0)

    def merge(self, a: IR, b: IR) -> IR:
        na, nb = a[0], b[0]
        if nb == 0:
            return a
        if na == 0:
            return b
        n = na + nb
        d = b[1] - a[1]
        return (n, a[1] + d * nb / n, a[2] + b[2] + d * d * na * nb / n)

    def finalize(self, ir: IR) -> float | None:
        if ir[0] == 0:
            return None
        return self.spread(max(ir[2], 0.0) / ir[0])

    def spread(self, variance: float) -> float:
        raise NotImplementedError

    def spread_array(self, variance: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fold_events(self, tiles, inv, ts, seq, values) -> None:
        """``merge`` with ``(1, v, 0)`` into tile ``inv[i]`` in log order, with the scalar
        float operations, vectorised across tiles: step k adds the k-th event of every tile
        that has one (tiles with the most events first, so step k is a prefix)."""
        if len(inv) == 0:
            return
        order = np.argsort(inv, kind="stable")
        g = inv[order]
        x = values[order]
        first = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        counts = np.diff(np.append(first, len(g)))
        by = np.argsort(-counts, kind="stable")
        gs, st, cn = g[first[by]], first[by], counts[by]
        N, M, M2 = tiles[gs, 0].copy(), tiles[gs, 1].copy(), tiles[gs, 2].copy()
        active = np.searchsorted(-cn, -np.arange(int(cn[0])), side="left")
        with np.errstate(invalid="ignore", over="ignore"):
            for k, m in enumerate(active.tolist()):
                xk = x[st[:m] + k]
                na, mean, m2 = N[:m], M[:m], M2[:m]
                n = na + 1.0
                d = xk - mean
                new_mean = mean + d * 1.0 / n
                new_m2 = m2 + 0.0 + d * d * na * 1.0 / n
                fresh = na == 0
                M[:m] = np.where(fresh, xk, new_mean)
                M2[:m] = np.where(fresh, 0.0, new_m2)
                N[:m] = np.where(fresh, 1.0, n)
        tiles[gs, 0], tiles[gs, 1], tiles[gs, 2] = N, M, M2

    def merge_arrays(self, a, b):
        na, nb = a[:, 0], b[:, 0]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            n = na + nb
            d = b[:, 1] - a[:, 1]
            merged = np.stack([n, a[:, 1] + d * nb / n,
                               a[:, 2] + b[:, 2] + d * d * na * nb / n], axis=1)
        return np.where((nb == 0)[:, None], a, np.where((na == 0)[:, None], b, merged))

    def reduce_ranges(self, values, lo, hi):
        n = hi - lo
        valid = n > 0
        out = np.full(len(n), np.nan)
        if valid.any():
            out[valid] = self.spread_array(two_pass_m2(values, lo, hi)[valid] / n[valid])
            same = valid & (range_reduce(np.minimum, values, lo, hi, np.nan)
                            == range_reduce(np.maximum, values, lo, hi, np.nan))
            out[same] = 0.0
        return out, valid


class Stddev(_Moments):
    """Population standard deviation of the field; null when empty."""

    name = "stddev"

    def spread(self, variance: float) -> float:
        return math.sqrt(variance)

    def spread_array(self, variance: np.ndarray) -> np.ndarray:
        return np.sqrt(variance)


class Variance(_Moments):
    """Population variance of the field (the square of ``stddev``); null when empty."""

    name = "variance"

    def spread(self, variance: float) -> float:
        return variance

    def spread_array(self, variance: np.ndarray) -> np.ndarray:
        return variance


def two_pass_m2(values: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                chunk: int = 1 << 22) -> np.ndarray:
    """Sum of squared deviations from the mean per range, two-pass: mean first, then the
    squares. The second pass expands (range, event) pairs in chunks of about ``chunk`` pairs,
    so memory stays bounded."""
    n = hi - lo
    valid = n > 0
    s = range_reduce(np.add, values, lo, hi, 0.0)
    mean = np.divide(s, n, out=np.zeros(len(n)), where=valid)
    m2 = np.zeros(len(n))
    ends = np.cumsum(n)
    start = 0
    while start < len(n):
        # ranges [start, stop) whose pairs fit in one chunk (at least one range)
        base = ends[start] - n[start]
        stop = max(int(np.searchsorted(ends, base + chunk, side="right")), start + 1)
        nn = n[start:stop]
        q = np.repeat(np.arange(start, stop), nn)
        first = np.repeat(np.cumsum(nn) - nn, nn)
        elem = np.repeat(lo[start:stop], nn) + (np.arange(len(q)) - first)
        dev = values[elem] - mean[q]
        m2[start:stop] = np.bincount(q - start, weights=dev * dev, minlength=stop - start)
        start = stop
    return m2

