"""Online tiles: pack events into rings, fold at read time, compare with the naive reference."""

from hypothesis import given, settings
from hypothesis import strategies as st

from features.definitions import Aggregate, Entity, EventSource, FeatureView
from features.online.fold import fold_view
from features.online.layout import ViewLayout
from features.semantics.aggregations import get_aggregation
from features.semantics.windows import MINUTE, tile_of
from tests.reference import brute_force, close

USER = Entity("user", ["user_id"])
SRC = EventSource("txn", {"user_id": "string", "amount": "float", "ts": "timestamp"}, "ts", USER)
VIEW = FeatureView(
    "user_txn",
    SRC,
    [
        Aggregate(fn, ["10m", "1h"], field=None if fn == "count" else "amount")
        for fn in ("count", "sum", "mean", "min", "max", "last", "stddev")
    ],
)
LAYOUT = ViewLayout(VIEW)


def build_blobs(events, layout=LAYOUT):
    """What the worker writes: per hop, tile index -> merged flat IR."""
    blobs = {}
    for hop, hl in layout.hops.items():
        tiles: dict[int, list[float]] = {}
        for ts, seq, v in events:
            k = tile_of(ts, hop)
            cur = tiles.get(k) or hl.empty_values()
            new = []
            for (fn, _), off in zip(hl.parts, hl.offsets, strict=True):
                agg = get_aggregation(fn)
                w = agg.width
                new.extend(agg.merge(tuple(cur[off:off + w]), agg.prepare(v, ts, seq)))
            tiles[k] = new
        newest = max(ts for ts, _, _ in events)
        blobs[hl.field] = hl.encode(newest, tiles)
    return blobs


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 90 * MINUTE), st.floats(-1e3, 1e3, allow_nan=False)),
        min_size=1, max_size=30,
    ),
    st.integers(0, 60 * MINUTE),
)
def test_fold_matches_reference_at_any_later_time(raw, after):
    events = [(ts, seq, v) for seq, (ts, v) in enumerate(raw)]
    t = max(ts for ts, _, _ in events) + 1 + after  # serving asks at or after the newest event
    slots = [LAYOUT.features[f.name] for f in VIEW.features]
    values, missing, newest = fold_view(slots, build_blobs(events), t)
    assert not any(missing) and newest == max(ts for ts, _, _ in events)
    for f, got in zip(VIEW.features, values, strict=True):
        want = brute_force(events, f.fn, t, f.window, f.hop)
        assert close(got, want, abs_=1e-6), (f.name, got, want)


def test_missing_entity_gives_empty_values():
    slots = [LAYOUT.features[f.name] for f in VIEW.features]
    values, missing, newest = fold_view(slots, {}, 10**12)
    assert all(missing) and newest is None
    assert values[:2] == [0, 0]  # count_10m, count_1h
