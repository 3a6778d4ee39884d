"""Additive aggregations: count, sum, mean. Their IRs add, so every kernel is a sum in order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from features.semantics.kernels.base import IR, Aggregation, ordered_sums, range_reduce

CHEAP_VECTOR_ROWS = 8  # one cumsum over all tiles at once: worth it from a few rings


class Sum(Aggregation):
    """Sum of the field over the window; 0 when empty."""

    name = "sum"
    vector_min_rows = CHEAP_VECTOR_ROWS
    exact = False

    def empty(self) -> IR:
        return (0.0,)

    def prepare(self, value: float, ts: int, seq: int) -> IR:
        return (float(value),)

    def merge(self, a: IR, b: IR) -> IR:
        return (a[0] + b[0],)

    def finalize(self, ir: IR) -> float:
        return ir[0]

    def fold_events(self, tiles, inv, ts, seq, values) -> None:
        np.add.at(tiles[:, 0], inv, values)

    def merge_tiles(self, v, mask):
        return ordered_sums(v, mask), None

    def finalize_list(self, ir: np.ndarray) -> list:
        return ir[:, 0].tolist()

    def read_tiles(self, records: Sequence[Sequence[float]], j: int) -> float:
        return sum([r[j] for r in records], 0.0)

    def reduce_ranges(self, values, lo, hi):
        return range_reduce(np.add, values, lo, hi, 0.0), np.ones(len(lo), dtype=bool)


class Count(Sum):
    """Number of events in the window; 0 when empty. A sum of ones, as an integer."""

    name = "count"
    needs_field = False
    exact = True

    def prepare(self, value: float, ts: int, seq: int) -> IR:
        return (1.0,)

    def finalize(self, ir: IR) -> int:
        return int(ir[0])

    def fold_events(self, tiles, inv, ts, seq, values) -> None:
        np.add.at(tiles[:, 0], inv, 1.0)

    def finalize_list(self, ir: np.ndarray) -> list:
        return [int(c) for c in ir[:, 0].tolist()]

    def read_tiles(self, records: Sequence[Sequence[float]], j: int) -> int:
        return int(sum([r[j] for r in records], 0.0))

    def reduce_ranges(self, values, lo, hi):
        n = hi - lo
        return n.astype(np.int64), np.ones(len(n), dtype=bool)


class Mean(Aggregation):
    """Arithmetic mean of the field; null when empty. State is ``(count, sum)``."""

    name = "mean"
    vector_min_rows = CHEAP_VECTOR_ROWS
    width = 2
    exact = False

    def empty(self) -> IR:
        return (0.0, 0.0)

    def prepare(self, value: float, ts: int, seq: int) -> IR:
        return (1.0, float(value))

    def merge(self, a: IR, b: IR) -> IR:
        return (a[0] + b[0], a[1] + b[1])

    def finalize(self, ir: IR) -> float | None:
        return ir[1] / ir[0] if ir[0] else None

    def fold_events(self, tiles, inv, ts, seq, values) -> None:
        np.add.at(tiles[:, 0], inv, 1.0)
        np.add.at(tiles[:, 1], inv, values)

    def merge_tiles(self, v, mask):
        return ordered_sums(v, mask), None

    def finalize_list(self, ir: np.ndarray) -> list:
        return [b / a if a else None
                for a, b in zip(ir[:, 0].tolist(), ir[:, 1].tolist(), strict=True)]

    def read_tiles(self, records: Sequence[Sequence[float]], j: int) -> float | None:
        c = sum([r[j] for r in records], 0.0)
        return sum([r[j + 1] for r in records], 0.0) / c if c else None

    def reduce_ranges(self, values, lo, hi):
        n = hi - lo
        valid = n > 0
        s = range_reduce(np.add, values, lo, hi, 0.0)
        return np.divide(s, n, out=np.full(len(n), np.nan), where=valid), valid
