"""Online tiles: pack events into rings, fold at read time, compare with the naive reference."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.definitions import Aggregate, Entity, EventSource, FeatureView
from features.online.fold import InexactReadError, fold_view
from features.online.layout import ViewLayout
from features.semantics.aggregations import AGGREGATIONS, get_aggregation
from features.semantics.windows import MINUTE, tile_of
from tests.reference import brute_force, close

USER = Entity("user", ["user_id"])
SRC = EventSource("txn", {"user_id": "string", "amount": "float", "ts": "timestamp"}, "ts", USER)
VIEW = FeatureView(
    "user_txn",
    SRC,
    [
        Aggregate(fn, ["10m", "1h"], field=None if fn == "count" else "amount")
        for fn in sorted(AGGREGATIONS)  # every registered aggregation
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


def _ring_slots(hl):
    return [(f, LAYOUT.features[f.name]) for f in VIEW.features
            if LAYOUT.features[f.name].hop is hl]


def _exact(events, hl, blobs, t):
    """Fold one ring at ``t``: equal to the brute-force reference, or InexactReadError."""
    pairs = _ring_slots(hl)
    values, missing, _ = fold_view([s for _, s in pairs], blobs, t)
    assert not any(missing)
    for (f, _), got in zip(pairs, values, strict=True):
        want = brute_force(events, f.fn, t, f.window, f.hop)
        assert close(got, want, abs_=1e-6), (f.name, t, got, want)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4 * 60 * MINUTE), st.floats(-1e3, 1e3, allow_nan=False)),
        min_size=1, max_size=30,
    ),
    st.one_of(st.integers(0, 5 * 60 * MINUTE), st.integers(0, 300).map(lambda m: m * MINUTE)),
)
def test_reads_at_any_time_are_exact_or_refused(raw, t):
    """Before the newest event a ring answers exactly (grid times with their tiles held) or
    refuses with the earliest exact time -- which then reads exactly, as does any later time."""
    events = [(ts, seq, v) for seq, (ts, v) in enumerate(raw)]
    newest = max(ts for ts, _, _ in events)
    blobs = build_blobs(events)
    for hl in LAYOUT.hops.values():
        try:
            _exact(events, hl, blobs, t)
        except InexactReadError as e:
            assert t <= newest and e.newest_us == newest and e.hop_us == hl.hop
            assert e.earliest_us % hl.hop == 0 and e.earliest_us <= newest
            assert e.feature in {f.name for f, _ in _ring_slots(hl)}
            assert (t % hl.hop != 0) or t < e.earliest_us
            _exact(events, hl, blobs, e.earliest_us)
            _exact(events, hl, blobs, newest + 1)


def test_grid_reads_before_the_newest_event_use_whole_tiles():
    """Events every minute for 3 h; a read 10 min back on the 5 min grid is exact (the ring of
    the 1h windows holds 14 tiles, two more than a window), one microsecond later is refused,
    and one before the ring's oldest tiles is refused as pruned."""
    events = [(m * MINUTE + 7, m, float(m % 13)) for m in range(180)]
    blobs = build_blobs(events)
    hl = LAYOUT.hops[5 * MINUTE]  # the 1h windows' ring
    t = 170 * MINUTE
    _exact(events, hl, blobs, t)
    with pytest.raises(InexactReadError, match="inside a 5m tile") as e:
        _exact(events, hl, blobs, t + 1)
    assert e.value.feature.endswith("_1h") and not e.value.pruned
    with pytest.raises(InexactReadError, match="no longer stored") as e:
        _exact(events, hl, blobs, 60 * MINUTE)
    assert e.value.pruned and e.value.earliest_us == t
    _exact(events, hl, blobs, e.value.earliest_us)
    with pytest.raises(InexactReadError):
        _exact(events, hl, blobs, e.value.earliest_us - hl.hop)
    # the refusal is the read the old fold got wrong: folding anyway differs from the reference
    values, _, _ = fold_view([s for _, s in _ring_slots(hl)], blobs, t + 1, exact=False)
    wants = [brute_force(events, f.fn, t + 1, f.window, f.hop) for f, _ in _ring_slots(hl)]
    assert not all(close(a, b, abs_=1e-6) for a, b in zip(values, wants, strict=True))
