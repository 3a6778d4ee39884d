"""Vectorised folds against the brute-force reference and the scalar IR algebra."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.semantics.aggregations import get_aggregation
from features.semantics.ranges import aggregate, asof_positions, window_bounds
from features.semantics.windows import in_window
from tests.reference import brute_force, close

FNS = ["count", "sum", "mean", "min", "max", "last", "stddev"]
EXACT = {"count", "min", "max", "last"}

events_st = st.lists(
    st.tuples(
        st.integers(0, 3),  # entity code
        st.integers(-300, 300),  # ts
        st.one_of(
            st.floats(-1e3, 1e3, allow_nan=False),
            st.sampled_from([0.1, 0.7, -2.5]),  # repeats: ties and identical values
        ),
    ),
    max_size=60,
)
queries_st = st.lists(st.tuples(st.integers(0, 4), st.integers(-400, 400)), min_size=1,
                      max_size=30)
window_st = st.sampled_from([(50, 5), (100, 10), (60, 2), (1000, 100)])


def _sorted_events(events):
    """(code, ts, seq, value) sorted by (code, ts, seq); seq = position in the log."""
    return sorted(((c, ts, seq, v) for seq, (c, ts, v) in enumerate(events)),
                  key=lambda e: (e[0], e[1], e[2]))


def _scalar(fn, evs, t, window, hop):
    agg = get_aggregation(fn)
    irs = [agg.prepare(v, ts, seq) for _, ts, seq, v in evs if in_window(ts, t, window, hop)]
    return agg.finalize(agg.fold(irs))


def _check(fn, got, ref):
    if fn in EXACT:
        assert got == ref, (fn, got, ref)
    else:
        assert close(got, ref), (fn, got, ref)


@settings(max_examples=300, deadline=None)
@given(events_st, queries_st, window_st)
def test_matches_brute_force_and_scalar_fold(events, queries, wh):
    window, hop = wh
    evs = _sorted_events(events)
    ev_code = np.array([e[0] for e in evs], dtype=np.int64)
    ev_ts = np.array([e[1] for e in evs], dtype=np.int64)
    vals = np.array([e[3] for e in evs], dtype=np.float64)
    q_code = np.array([q[0] for q in queries], dtype=np.int64)
    q_t = np.array([q[1] for q in queries], dtype=np.int64)
    lo, hi = window_bounds(ev_code, ev_ts, q_code, q_t, window, hop)
    for fn in FNS:
        out, valid = aggregate(fn, vals, lo, hi)
        for i, (c, t) in enumerate(queries):
            mine = [e for e in evs if e[0] == c]
            got = (int(out[i]) if fn == "count" else float(out[i])) if valid[i] else None
            _check(fn, got, brute_force([(ts, seq, v) for _, ts, seq, v in mine],
                                        fn, t, window, hop))
            _check(fn, got, _scalar(fn, mine, t, window, hop))


def test_rank_fallback_for_huge_time_spans():
    """Codes x time span beyond int64 still give exact bounds (ranks replace times)."""
    big = 2**61
    ev_code = np.array([0, 0, 5, 5], dtype=np.int64)
    ev_ts = np.array([-big, 0, 10, big], dtype=np.int64)
    q_code = np.array([0, 0, 5, 5, 3], dtype=np.int64)
    q_t = np.array([1, -big + 1, 11, big + 1, 0], dtype=np.int64)
    lo, hi = window_bounds(ev_code, ev_ts, q_code, q_t, 2**62, 2**58)
    assert (hi - lo).tolist() == [2, 1, 1, 2, 0]


def test_identical_values_give_zero_stddev():
    vals = np.full(7, 0.1)
    lo, hi = np.array([0, 2]), np.array([7, 2])
    out, valid = aggregate("stddev", vals, lo, hi)
    assert out[0] == 0.0 and valid.tolist() == [True, False] and math.isnan(out[1])


def test_empty_windows():
    lo = hi = np.array([0, 0])
    for fn in FNS:
        out, valid = aggregate(fn, np.array([]), lo, hi)
        if fn in ("count", "sum"):
            assert valid.all() and (out == 0).all()
        else:
            assert not valid.any()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-50, 50)), max_size=40), queries_st)
def test_asof_positions_pick_the_latest_row_at_or_before_t(rows, queries):
    """Latest row of the entity with ts <= t; a tie goes to the later row (log order)."""
    srt = sorted(((c, ts, i) for i, (c, ts) in enumerate(rows)))
    q_code = np.array([q[0] for q in queries], dtype=np.int64)
    q_t = np.array([q[1] // 8 for q in queries], dtype=np.int64)
    pos = asof_positions(np.array([r[0] for r in srt], dtype=np.int64),
                         np.array([r[1] for r in srt], dtype=np.int64), q_code, q_t)
    for i, (c, t) in enumerate(zip(q_code.tolist(), q_t.tolist(), strict=True)):
        cands = [r for r in srt if r[0] == c and r[1] <= t]
        want = max(cands, key=lambda r: (r[1], r[2]))[2] if cands else None
        assert (srt[pos[i]][2] if pos[i] >= 0 else None) == want


def test_stddev_chunks_give_the_same_result():
    from features.semantics.ranges import _stddev

    rng = np.random.default_rng(1)
    vals = rng.normal(5, 3, 500)
    lo = rng.integers(0, 500, 200)
    hi = np.minimum(lo + rng.integers(0, 60, 200), 500)
    whole = _stddev(vals, lo, hi)
    assert np.array_equal(_stddev(vals, lo, hi, chunk=7), whole, equal_nan=True)
    assert np.array_equal(_stddev(vals, lo, hi, chunk=1), whole, equal_nan=True)
