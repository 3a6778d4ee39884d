"""The compiled hot-path fold gives exactly what the readable ``fold_view`` gives."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from features.definitions import Aggregate, FeatureView
from features.online.fastfold import RingFold
from features.online.fold import InexactReadError, fold_view
from features.online.layout import ViewLayout
from features.semantics.windows import MINUTE
from tests.features.online.test_fold import LAYOUT, VIEW, build_blobs
from tests.reference import same


def _outcome(fn):
    """The values ``fn`` returns, or the refusal (feature, earliest exact time) it raises."""
    try:
        return fn()
    except InexactReadError as e:
        return ("refused", e.feature, e.earliest_us, e.newest_us)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 90 * MINUTE), st.floats(-1e3, 1e3, allow_nan=False)),
        min_size=0, max_size=30,
    ),
    st.one_of(st.integers(-30 * MINUTE, 3 * 60 * MINUTE),
              st.integers(-30, 180).map(lambda m: m * MINUTE)),  # on the hop grid too
)
def test_ring_fold_equals_fold_view(raw, dt):
    """Same values, or the same refusal, for reads before and after the newest event."""
    events = [(ts, seq, v) for seq, (ts, v) in enumerate(raw)]
    blobs = build_blobs(events) if events else {}
    t = 60 * MINUTE + dt
    slots = [LAYOUT.features[f.name] for f in VIEW.features]
    for hop in LAYOUT.hops.values():
        cols = [(i, s) for i, s in enumerate(slots) if s.hop is hop]
        mine = [s for _, s in cols]

        def fast(hop=hop, cols=cols):
            vals = [object()] * len(cols)
            miss = [None] * len(cols)
            n = RingFold(hop, list(enumerate(s for _, s in cols))).fold(
                blobs.get(hop.field), t, vals, miss)
            return vals, miss, n

        got = _outcome(fast)
        want = _outcome(lambda mine=mine: fold_view(mine, blobs, t))
        if want[0] == "refused":
            assert got == want
            continue
        assert got[2] == want[2] and got[1] == want[1]
        for s, a, b in zip(mine, got[0], want[0], strict=True):
            assert same(a, b), (s.name, a, b)


VEC_VIEW = FeatureView(
    "vec",
    VIEW.source,
    [Aggregate(fn, ["10m", "1h"], field=None if fn == "count" else "amount")
     for fn in ("count", "sum", "mean", "min", "max")],
)
VEC_LAYOUT = ViewLayout(VEC_VIEW)


event_lists = st.lists(
    st.tuples(st.integers(0, 90 * MINUTE),
              st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.just(-0.0),
                        st.just(math.nan), st.just(math.inf))),
    min_size=0, max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(event_lists, min_size=0, max_size=20),
    st.one_of(st.integers(-30 * MINUTE, 3 * 60 * MINUTE),
              st.integers(-30, 180).map(lambda m: m * MINUTE)),  # on the hop grid too
    st.sampled_from([(VEC_VIEW, VEC_LAYOUT), (VIEW, LAYOUT)]),
)
def test_fold_many_equals_row_by_row_fold(rows, dt, view_layout):
    view, layout = view_layout
    t = 60 * MINUTE + dt
    per_row = [
        build_blobs([(ts, seq, v) for seq, (ts, v) in enumerate(r)], layout) if r else {}
        for r in rows
    ]
    slots = [layout.features[f.name] for f in view.features]
    for hop in layout.hops.values():
        cols = [(i, s) for i, s in enumerate(slots) if s.hop is hop]
        ring = RingFold(hop, cols)
        blobs = [b.get(hop.field) for b in per_row]
        got_v = [[None] * len(slots) for _ in blobs]
        got_m = [[None] * len(slots) for _ in blobs]
        want_v = [[None] * len(slots) for _ in blobs]
        want_m = [[None] * len(slots) for _ in blobs]
        refused = []
        for b in blobs:  # which rows a row-by-row fold refuses
            try:
                ring.fold(b, t, [None] * len(slots), [None] * len(slots))
            except InexactReadError:
                refused.append(True)
            else:
                refused.append(False)
        if any(refused):
            try:
                ring.fold_many(blobs, t, got_v, got_m)
            except InexactReadError as e:
                assert refused[e.row]
            else:
                raise AssertionError("fold_many answered a read fold refuses")
            continue
        got_n = ring.fold_many(blobs, t, got_v, got_m)
        want_n = [ring.fold(b, t, v, m) for b, v, m in zip(blobs, want_v, want_m, strict=True)]
        assert got_n == want_n and got_m == want_m
        for gr, wr in zip(got_v, want_v, strict=True):
            for a, b in zip(gr, wr, strict=True):
                assert same(a, b), (a, b)


def test_fold_many_of_many_rings_folds_every_aggregation_with_numpy():
    """Past every ``vector_min_rows`` all features fold through ``merge_tiles``: still the
    values of the ring-by-ring fold, for reads at and past the newest events."""
    import random

    rng = random.Random(3)
    per_row = []
    for _ in range(80):
        raw = [(rng.randrange(0, 90 * MINUTE), rng.choice([rng.uniform(-1e3, 1e3), 0.5]))
               for _ in range(rng.randrange(0, 12))]
        per_row.append(build_blobs([(ts, s, v) for s, (ts, v) in enumerate(raw)]) if raw else {})
    slots = [LAYOUT.features[f.name] for f in VIEW.features]
    for hop in LAYOUT.hops.values():
        cols = [(i, s) for i, s in enumerate(slots) if s.hop is hop]
        ring = RingFold(hop, cols)
        assert len(per_row) >= max(a.vector_min_rows for *_, a in ring.plan)
        blobs = [b.get(hop.field) for b in per_row]
        for t in (90 * MINUTE + 1, 100 * MINUTE, 100 * MINUTE + 7):
            got_v = [[None] * len(slots) for _ in blobs]
            got_m = [[None] * len(slots) for _ in blobs]
            got_n = ring.fold_many(blobs, t, got_v, got_m)
            for b, gv, gm, gn in zip(blobs, got_v, got_m, got_n, strict=True):
                v, m = [None] * len(slots), [None] * len(slots)
                assert ring.fold(b, t, v, m) == gn and m == gm
                assert all(same(a, c) for a, c in zip(gv, v, strict=True)), (gv, v)
