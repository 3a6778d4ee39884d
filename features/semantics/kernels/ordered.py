"""Aggregations by event order: ``last`` and ``first``, the value of the newest or oldest event.

State is ``(ts, seq, value)``; ``seq`` is the log position (Kafka offset, or row order in an
offline file), compared only between events of one entity. The two are mirror images: ``last``
takes the greatest ``(ts, seq)`` (a tie in event time goes to the later event in the log),
``first`` the smallest (a tie goes to the earlier one), and their empty IRs sit at the far end
(``-inf`` / ``+inf``) so that every event beats them.
"""

from __future__ import annotations

import numpy as np

from features.semantics.kernels.base import INF, IR, Aggregation


class Last(Aggregation):
    """Value of the event with the greatest event time; ties go to the later one in the log."""

    name = "last"
    width = 3

    def empty(self) -> IR:
        return (-INF, -INF, np.nan)

    def prepare(self, value: float, ts: int, seq: int) -> IR:
        return (float(ts), float(seq), float(value))

    def merge(self, a: IR, b: IR) -> IR:
        return b if (b[0], b[1]) >= (a[0], a[1]) else a

    def finalize(self, ir: IR) -> float | None:
        return None if ir[0] == -INF else ir[2]

    def fold_events(self, tiles, inv, ts, seq, values) -> None:
        """Per tile, the batch's greatest (ts, seq) replaces the state if not older."""
        order = np.lexsort((seq, ts, inv))
        g = inv[order]
        pick = order[np.r_[g[1:] != g[:-1], True]]
        _replace(tiles, inv[pick], ts[pick], seq[pick], values[pick], newer=True)

    def merge_arrays(self, a, b):
        win = (b[:, 0] > a[:, 0]) | ((b[:, 0] == a[:, 0]) & (b[:, 1] >= a[:, 1]))
        return np.where(win[:, None], b, a)

    def reduce_ranges(self, values, lo, hi):
        valid = hi > lo
        out = np.full(len(lo), np.nan)
        out[valid] = values[hi[valid] - 1]  # sorted by (ts, log order): the range's end
        return out, valid


class First(Aggregation):
    """Value of the event with the smallest event time; ties go to the earlier one in the log."""

    name = "first"
    width = 3

    def empty(self) -> IR:
        return (INF, INF, np.nan)

    def prepare(self, value: float, ts: int, seq: int) -> IR:
        return (float(ts), float(seq), float(value))

    def merge(self, a: IR, b: IR) -> IR:
        return a if (a[0], a[1]) <= (b[0], b[1]) else b

    def finalize(self, ir: IR) -> float | None:
        return None if ir[0] == INF else ir[2]

    def fold_events(self, tiles, inv, ts, seq, values) -> None:
        """Per tile, the batch's smallest (ts, seq) replaces the state if strictly older."""
        order = np.lexsort((seq, ts, inv))
        g = inv[order]
        pick = order[np.r_[True, g[1:] != g[:-1]]]
        _replace(tiles, inv[pick], ts[pick], seq[pick], values[pick], newer=False)

    def merge_arrays(self, a, b):
        keep = (a[:, 0] < b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] <= b[:, 1]))
        return np.where(keep[:, None], a, b)

    def reduce_ranges(self, values, lo, hi):
        valid = hi > lo
        out = np.full(len(lo), np.nan)
        out[valid] = values[lo[valid]]  # sorted by (ts, log order): the range's start
        return out, valid


def _replace(tiles: np.ndarray, gi: np.ndarray, ts: np.ndarray, seq: np.ndarray,
             v: np.ndarray, newer: bool) -> None:
    """Put one candidate event per tile (``gi`` distinct) into its tile where ``merge`` would
    pick it: ``last`` takes it unless the state is newer, ``first`` only if it is older."""
    t, s = ts.astype(np.float64), seq.astype(np.float64)
    at, aseq = tiles[gi, 0], tiles[gi, 1]
    if newer:
        win = (t > at) | ((t == at) & (s >= aseq))
    else:
        win = (t < at) | ((t == at) & (s < aseq))
    gi = gi[win]
    tiles[gi, 0], tiles[gi, 1], tiles[gi, 2] = t[win], s[win], v[win]
