"""Vectorised window folds: every query's window in one numpy pass, for training sets.

The scalar algebra (``aggregations.py``) folds one window at a time; a training set asks for
millions. Here the events of one view are arrays sorted by ``(entity code, ts, seq)`` and each
query ``(code, t)`` becomes an index range ``[lo, hi)`` of the events with
``start(t) <= ts < t`` (``windows.window_start``, which works on arrays too). Each
aggregation then reduces those ranges with its own kernel (``reduce_ranges``): e.g.
``ufunc.reduceat`` for sums (adding left to right in log order, as the scalar fold does),
element ``hi - 1`` for ``last`` and ``lo`` for ``first`` (the sort puts the greatest
``(ts, seq)`` last), an exact two-pass form for ``stddev``/``variance``. Results agree with
the scalar algebra exactly for the aggregations marked ``exact``, the others to rounding.
"""

from __future__ import annotations

import numpy as np

from features.semantics.aggregations import get_aggregation
from features.semantics.windows import window_start

_I64_MAX = np.iinfo(np.int64).max


def _keys(codes: np.ndarray, ts: np.ndarray, tmin: int, span: int) -> np.ndarray:
    return codes * span + (np.clip(ts, tmin, tmin + span - 1) - tmin)


def _search(
    ev_code: np.ndarray, ev_ts: np.ndarray, q_code: np.ndarray, bounds: list[np.ndarray]
) -> list[np.ndarray]:
    """Per bound array ``x``: for each query, the number of events sorted before
    ``(q_code, x)``, i.e. the index of the first event of that entity with ``ts >= x``.

    Searching one composite key ``code * span + ts`` finds every bound in one
    ``searchsorted``; bounds outside the events' time range are clipped first (that changes no
    comparison), and when even then the key would overflow, times are replaced by their rank
    among the events' distinct times. Each ``x`` must be non-decreasing in ``(code, t)``
    order, as window starts and query times are.
    """
    ev_code = np.asarray(ev_code, dtype=np.int64)
    ev_ts = np.asarray(ev_ts, dtype=np.int64)
    q_code = np.asarray(q_code, dtype=np.int64)
    if len(ev_ts) == 0:
        return [np.zeros(len(q_code), dtype=np.int64) for _ in bounds]
    tmin, tmax = int(ev_ts.min()), int(ev_ts.max())
    span = tmax - tmin + 2
    ncodes = int(max(ev_code.max(), q_code.max(initial=0))) + 1
    if ncodes * span < _I64_MAX // 2:
        ev_key = _keys(ev_code, ev_ts, tmin, span)
        keys = [_keys(q_code, np.asarray(x, dtype=np.int64), tmin, span) for x in bounds]
    else:  # ranks keep the order of every comparison ts < bound
        uts = np.unique(ev_ts)
        span = len(uts) + 1
        ev_key = ev_code * span + np.searchsorted(uts, ev_ts)
        keys = [q_code * span + np.searchsorted(uts, x) for x in bounds]
    # sorted needles let searchsorted narrow each search from the previous one (and stay in
    # cache): ~10x faster on millions of random queries; all bounds sort in the same order
    order = np.argsort(keys[-1], kind="stable")
    out = []
    for k in keys:
        pos = np.empty(len(q_code), dtype=np.int64)
        pos[order] = np.searchsorted(ev_key, k[order], side="left")
        out.append(pos)
    return out


def window_bounds(
    ev_code: np.ndarray,
    ev_ts: np.ndarray,
    q_code: np.ndarray,
    q_t: np.ndarray,
    window: int,
    hop: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Index ranges ``[lo, hi)`` into the events (sorted by (code, ts)) of each query's window
    ``start(t) <= ts < t``. Codes are non-negative ints."""
    q_t = np.asarray(q_t, dtype=np.int64)
    lo, hi = _search(ev_code, ev_ts, q_code, [window_start(q_t, window, hop), q_t])
    return lo, hi


def asof_positions(
    ev_code: np.ndarray, ev_ts: np.ndarray, q_code: np.ndarray, q_t: np.ndarray
) -> np.ndarray:
    """Index of the last row (sorted by (code, ts, log order)) of the query's entity with
    ``ts <= t``, or -1: the point-in-time join of batch features."""
    q_t = np.asarray(q_t, dtype=np.int64)
    (after,) = _search(ev_code, ev_ts, q_code, [q_t + 1])
    pos = after - 1
    q_code = np.asarray(q_code, dtype=np.int64)
    ok = pos >= 0
    ok[ok] = np.asarray(ev_code, dtype=np.int64)[pos[ok]] == q_code[ok]
    return np.where(ok, pos, -1)


def aggregate(
    fn: str, values: np.ndarray | None, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Value of ``fn`` over ``values[lo:hi]`` per query, and a mask of which are non-null:
    the aggregation's own ``reduce_ranges`` (``features.semantics.kernels``).

    ``count`` (int64) and ``sum`` are never null (0 for an empty window); the others are null
    for an empty window. ``values`` are the events' field values in sort order (unused by
    count).
    """
    agg = get_aggregation(fn)
    if values is None:
        if agg.needs_field:
            raise ValueError(f"aggregation {fn!r} needs values")
    else:
        values = np.asarray(values, dtype=np.float64)
    return agg.reduce_ranges(values, np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64))
