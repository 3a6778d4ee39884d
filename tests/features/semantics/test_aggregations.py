"""The IR algebra against the naive reference: any split into tiles folds to the same value."""

import math

from hypothesis import given
from hypothesis import strategies as st

from features.semantics.aggregations import AGGREGATIONS
from tests.reference import brute_force, close

VALUES = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.1, 0.1, 100.0, -3.5]),
)
EVENTS = st.lists(st.tuples(st.integers(0, 50), VALUES), max_size=40)


@given(EVENTS, st.data())
def test_any_partition_folds_to_reference(raw, data):
    events = [(ts, seq, v) for seq, (ts, v) in enumerate(raw)]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=5)))
    for fn, agg in AGGREGATIONS.items():
        parts, prev = [], 0
        for c in [*cuts, len(events)]:
            parts.append(agg.fold(agg.prepare(v, ts, seq) for ts, seq, v in events[prev:c]))
            prev = c
        # merge partial states in a shuffled-but-associative grouping: right fold
        acc = agg.empty()
        for p in reversed(parts):
            acc = agg.merge(p, acc)
        got = agg.finalize(acc)
        want = brute_force(events, fn, t=10**6, window=10**7, hop=10**6)
        tol = 1e-9 * max(1.0, max((abs(v) for _, _, v in events), default=0.0))
        assert close(got, want, abs_=tol), (fn, got, want)


def test_empty_window_values():
    fin = {fn: a.finalize(a.empty()) for fn, a in AGGREGATIONS.items()}
    assert fin == {"count": 0, "sum": 0.0, "mean": None, "min": None, "max": None,
                   "last": None, "first": None, "stddev": None, "variance": None}


def test_last_ties_broken_by_log_order():
    agg = AGGREGATIONS["last"]
    a, b = agg.prepare(1.0, 5, 1), agg.prepare(2.0, 5, 2)
    assert agg.finalize(agg.merge(b, a)) == 2.0
    assert agg.finalize(agg.merge(a, b)) == 2.0


def test_stddev_of_identical_values_is_zero():
    agg = AGGREGATIONS["stddev"]
    acc = agg.fold(agg.prepare(0.1, i, i) for i in range(7))
    assert agg.finalize(acc) == 0.0
    assert math.isclose(agg.finalize(agg.fold([agg.prepare(1, 0, 0), agg.prepare(3, 0, 1)])), 1.0)
