"""Window bounds and as-of positions of the vectorised offline folds (the aggregations'
range kernels are checked in ``test_kernels.py``)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.semantics.ranges import aggregate, asof_positions, window_bounds

queries_st = st.lists(st.tuples(st.integers(0, 4), st.integers(-400, 400)), min_size=1,
                      max_size=30)


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
    from features.semantics.kernels.moments import two_pass_m2

    rng = np.random.default_rng(1)
    vals = rng.normal(5, 3, 500)
    lo = rng.integers(0, 500, 200)
    hi = np.minimum(lo + rng.integers(0, 60, 200), 500)
    whole = two_pass_m2(vals, lo, hi)
    assert np.array_equal(two_pass_m2(vals, lo, hi, chunk=7), whole, equal_nan=True)
    assert np.array_equal(two_pass_m2(vals, lo, hi, chunk=1), whole, equal_nan=True)
