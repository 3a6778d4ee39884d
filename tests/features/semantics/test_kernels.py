"""Every kernel of every registered aggregation against the brute-force reference.

Each kernel must give the bits of the scalar merge chain it stands for (``fold_events``: events
merged into tiles in log order; ``merge_tiles``/``read_tiles``: tiles merged oldest first), and
its value must be the reference's (exactly for ``exact`` aggregations, else to rounding);
``reduce_ranges`` is checked against the reference and the scalar fold. A new aggregation is
covered here as soon as it is registered (and ``tests/reference.py`` knows it).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import Aggregate
from features.errors import DefinitionError
from features.semantics.aggregations import AGGREGATIONS, get_aggregation
from features.semantics.ranges import aggregate, window_bounds
from features.semantics.windows import in_window
from tests.reference import brute_force, close, same

AGGS = sorted(AGGREGATIONS)
# a window at t=10**6 that holds every ts below
ALL = {"t": 10**6, "window": 10**7, "hop": 10**6}
VALUES = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([0.1, 0.7, -2.5, 0.0]),  # repeats: ties and identical values
)


def _bits(x) -> bytes:
    return np.asarray(x, dtype=np.float64).tobytes()


def _agrees(agg, got, events) -> bool:
    want = brute_force(events, agg.name, **ALL)
    if agg.exact:
        return got == want
    tol = 1e-9 * max(1.0, max((abs(v) for _, _, v in events), default=0.0))
    return close(got, want, abs_=tol)


def _value(agg, v: float) -> float:
    return v if agg.needs_field else 1.0  # what the reference sees for count


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 30), VALUES), max_size=40),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 30), VALUES), min_size=1, max_size=40),
)
def test_fold_events_is_the_merge_chain(prior, batch):
    """Tiles already holding earlier events, then a batch folded in: the kernel's tiles are
    the scalar chain's, bit for bit, and finalize to the reference over all their events."""
    prior = [(g, ts, seq, v) for seq, (g, ts, v) in enumerate(prior)]
    batch = [(g, ts, len(prior) + i, v) for i, (g, ts, v) in enumerate(batch)]
    inv = np.array([e[0] for e in batch], dtype=np.int64)
    ts = np.array([e[1] for e in batch], dtype=np.int64)
    seq = np.array([e[2] for e in batch], dtype=np.int64)
    vals = np.array([e[3] for e in batch], dtype=np.float64)
    for name in AGGS:
        agg = get_aggregation(name)
        chain = [agg.fold(agg.prepare(v, t, s) for g2, t, s, v in prior if g2 == g)
                 for g in range(5)]
        tiles = np.array(chain, dtype=np.float64).reshape(5, agg.width)
        # the kernel works on a slice of wider records, as in a ring
        records = np.zeros((5, agg.width + 2))
        records[:, 1:1 + agg.width] = tiles
        agg.fold_events(records[:, 1:1 + agg.width], inv, ts, seq,
                        vals if agg.needs_field else None)
        for g, t, s, v in batch:
            chain[g] = agg.merge(chain[g], agg.prepare(v, t, s))
        if name in ("min", "max"):  # numpy's at-reductions may keep -0.0 for 0.0 (extremes.py)
            assert np.array_equal(records[:, 1:1 + agg.width], chain), name
        else:
            assert _bits(records[:, 1:1 + agg.width]) == _bits(chain), name
        assert (records[:, 0] == 0).all() and (records[:, -1] == 0).all(), name
        for g in range(5):
            mine = [(t, s, _value(agg, v)) for g2, t, s, v in prior + batch if g2 == g]
            assert _agrees(agg, agg.finalize(tuple(records[g, 1:1 + agg.width])), mine), name


tile_events = st.lists(st.tuples(st.integers(0, 30), VALUES), max_size=4)


rings_st = st.integers(1, 8).flatmap(lambda n_tiles: st.lists(
    st.lists(st.tuples(tile_events, st.booleans()), min_size=n_tiles, max_size=n_tiles),
    min_size=1, max_size=6))


@settings(max_examples=100, deadline=None)
@given(rings_st)
def test_merge_tiles_and_read_tiles_are_the_merge_chain(rows):
    """Rings of tiles (each the fold of its events), a mask of those inside a window: many
    rows at once (``merge_tiles``) and one ring (``read_tiles``) give the scalar chain's
    value, which is the reference's over the masked tiles' events."""
    seq = iter(range(10**6))
    rows = [[([(ts, next(seq), v) for ts, v in evs], on) for evs, on in r] for r in rows]
    mask = np.array([[on for _, on in r] for r in rows], dtype=bool)
    for name in AGGS:
        agg = get_aggregation(name)
        irs = [[agg.fold(agg.prepare(v, t, s) for t, s, v in evs) for evs, _ in r]
               for r in rows]
        v = np.array(irs, dtype=np.float64).reshape(len(rows), len(rows[0]), agg.width)
        ir, redo = agg.merge_tiles(v, mask)
        assert redo is None or not redo.any(), name  # no NaN here, so nothing to redo
        got = agg.finalize_list(ir)
        for r, row in enumerate(rows):
            inside = [irs[r][k] for k, (_, on) in enumerate(row) if on]
            chain = agg.fold(inside)
            if name in ("min", "max"):  # numpy's min/max may pick -0.0 for 0.0, as ever
                assert np.array_equal(ir[r], chain), name
            else:
                assert _bits(ir[r]) == _bits(chain), name
            assert same(got[r], agg.finalize(chain)), name
            # read_tiles gets whole flat records with other parts around its own
            padded = [(7.0, *x, 7.0) for x in inside]
            assert same(agg.read_tiles(padded, 1), got[r]), name
            mine = [(t, s, _value(agg, x)) for evs, on in row if on for t, s, x in evs]
            assert _agrees(agg, got[r], mine), (name, got[r])


def test_min_max_hand_nan_rows_back():
    """numpy's min/max treat NaN unlike ``merge``'s comparison: those rows are redone."""
    v = np.array([[[1.0], [math.nan]], [[2.0], [3.0]]])
    mask = np.ones((2, 2), dtype=bool)
    for name in ("min", "max"):
        _, redo = get_aggregation(name).merge_tiles(v, mask)
        assert redo.tolist() == [True, False]


events_st = st.lists(
    st.tuples(st.integers(0, 3), st.integers(-300, 300), VALUES), max_size=60)
queries_st = st.lists(st.tuples(st.integers(0, 4), st.integers(-400, 400)), min_size=1,
                      max_size=30)
window_st = st.sampled_from([(50, 5), (100, 10), (60, 2), (1000, 100)])


@settings(max_examples=150, deadline=None)
@given(events_st, queries_st, window_st)
def test_reduce_ranges_match_reference_and_scalar_fold(events, queries, wh):
    """Training-set folds: events sorted by (entity, ts, log order), one range per query."""
    window, hop = wh
    evs = sorted(((c, ts, seq, v) for seq, (c, ts, v) in enumerate(events)),
                 key=lambda e: (e[0], e[1], e[2]))
    ev_code = np.array([e[0] for e in evs], dtype=np.int64)
    ev_ts = np.array([e[1] for e in evs], dtype=np.int64)
    vals = np.array([e[3] for e in evs], dtype=np.float64)
    q_code = np.array([q[0] for q in queries], dtype=np.int64)
    q_t = np.array([q[1] for q in queries], dtype=np.int64)
    lo, hi = window_bounds(ev_code, ev_ts, q_code, q_t, window, hop)
    for name in AGGS:
        agg = get_aggregation(name)
        out, valid = aggregate(name, vals if agg.needs_field else None, lo, hi)
        for i, (c, t) in enumerate(queries):
            mine = [(ts, seq, _value(agg, v)) for c2, ts, seq, v in evs if c2 == c]
            got = (int(out[i]) if name == "count" else float(out[i])) if valid[i] else None
            want = brute_force(mine, name, t, window, hop)
            scalar = agg.finalize(agg.fold(agg.prepare(v, ts, seq) for ts, seq, v in mine
                                           if in_window(ts, t, window, hop)))
            for ref in (want, scalar):
                assert got == ref if agg.exact else close(got, ref), (name, got, ref)


def test_empty_ranges():
    lo = hi = np.array([0, 0])
    for name in AGGS:
        out, valid = aggregate(name, np.array([]), lo, hi)
        if name in ("count", "sum"):
            assert valid.all() and (out == 0).all()
        else:
            assert not valid.any()


def test_first_and_last_ties_mirror_each_other():
    """Same event time: ``last`` takes the later event in the log, ``first`` the earlier."""
    first, last = get_aggregation("first"), get_aggregation("last")
    a, b = first.prepare(1.0, 5, 1), first.prepare(2.0, 5, 2)
    assert first.finalize(first.merge(a, b)) == first.finalize(first.merge(b, a)) == 1.0
    assert last.finalize(last.merge(a, b)) == last.finalize(last.merge(b, a)) == 2.0
    older = first.prepare(3.0, 4, 9)  # an earlier event time wins whatever its log position
    assert first.finalize(first.fold([a, b, older])) == 3.0


def test_variance_is_the_square_of_stddev():
    var, sd = get_aggregation("variance"), get_aggregation("stddev")
    irs = [var.prepare(x, 0, i) for i, x in enumerate([1.0, 3.0])]
    assert var.finalize(var.fold(irs)) == 1.0 == sd.finalize(sd.fold(irs)) ** 2  # population
    assert var.finalize(var.fold([var.prepare(0.1, 0, i) for i in range(5)])) == 0.0
    assert var.finalize(var.empty()) is None


def test_definitions_validate_names_through_the_registry():
    with pytest.raises(DefinitionError, match="choose one of count, first, last, max, mean"):
        Aggregate("frist", ["1h"], field="amount")
    with pytest.raises(DefinitionError, match="needs field"):
        Aggregate("variance", ["1h"])
    assert Aggregate("first", ["1h"], field="amount").fn == "first"
