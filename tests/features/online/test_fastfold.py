"""The compiled hot-path fold gives exactly what the readable ``fold_view`` gives."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from features.online.fastfold import RingFold
from features.online.fold import fold_view
from features.semantics.windows import MINUTE
from tests.features.online.test_fold import LAYOUT, VIEW, build_blobs


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b and type(a) is type(b)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 90 * MINUTE), st.floats(-1e3, 1e3, allow_nan=False)),
        min_size=0, max_size=30,
    ),
    st.integers(-30 * MINUTE, 3 * 60 * MINUTE),
)
def test_ring_fold_equals_fold_view(raw, dt):
    events = [(ts, seq, v) for seq, (ts, v) in enumerate(raw)]
    blobs = build_blobs(events) if events else {}
    t = 60 * MINUTE + dt
    slots = [LAYOUT.features[f.name] for f in VIEW.features]
    want, want_missing, want_newest = fold_view(slots, blobs, t)
    vals = [object()] * len(slots)
    miss = [None] * len(slots)
    newest = None
    for hop in LAYOUT.hops.values():
        cols = [(i, s) for i, s in enumerate(slots) if s.hop is hop]
        n = RingFold(hop, cols).fold(blobs.get(hop.field), t, vals, miss)
        if n is not None:
            newest = n if newest is None else max(newest, n)
    assert newest == want_newest
    assert miss == want_missing
    for f, a, b in zip(VIEW.features, vals, want, strict=True):
        assert _same(a, b), (f.name, a, b)
