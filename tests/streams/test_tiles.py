"""Tile folding (pure): the inlined merges equal the algebra, the packed rings equal the
layout's encoding, and reads of the folded rings equal a brute-force reference."""

from __future__ import annotations

import random

import pytest

from features import Aggregate, Entity, EventSource, FeatureView
from features.online.fold import fold_view
from features.online.layout import ViewLayout
from features.semantics.windows import MINUTE
from streams.worker.tiles import Ring, fold, plan_views
from tests.reference import brute_force, close

user = Entity("user", keys=["user_id"])
src = EventSource("s", {"user_id": "string", "x": "float", "ts": "timestamp"}, "ts", user)
W = ["10m", "2h"]
VIEW = FeatureView("v", src, [Aggregate(fn, W, field=None if fn == "count" else "x")
                              for fn in ("count", "sum", "mean", "min", "max", "last", "stddev")])


def algebra_fold(plans, events):
    """The same rings built with the algebra's own prepare/merge."""
    rings = [dict() for _ in plans]
    for seq, (ts, x) in enumerate(events):
        for tiles, p in zip(rings, plans, strict=True):
            idx = ts // p.hop
            tile = list(tiles.get(idx, p.empty))
            for agg, _fld, a, b in p.parts:
                tile[a:b] = agg.merge(tile[a:b], agg.prepare(x, ts, seq))
            tiles[idx] = tile
    return rings


@pytest.mark.parametrize("seed", range(5))
def test_fold_matches_algebra_and_brute_force(seed):
    rng = random.Random(seed)
    t0 = 1_800_000_000_000_000
    events = [(t0 + rng.randrange(0, 150 * MINUTE), round(rng.uniform(-50, 500), 2))
              for _ in range(rng.randrange(1, 300))]
    if seed == 0:  # ties in event time: 'last' must follow log order
        events += [(events[0][0], 1.0), (events[0][0], 2.0)]
    plans = plan_views([VIEW])
    rings = [Ring() for _ in plans]
    for seq, (ts, x) in enumerate(events):
        fold(rings, plans, {"x": x}, ts, seq)
    ref = algebra_fold(plans, events)
    top = max(ts for ts, _ in events)
    for ring, tiles, p in zip(rings, ref, plans, strict=True):
        keep = {i: v for i, v in tiles.items() if i > ring.top - p.slots}
        assert {i: ring.tiles[i] for i in keep} == keep
        blob = p.encode(ring)
        assert blob == p.layout.encode(ring.newest, keep)
        assert p.decode(blob).tiles == keep
    layout = ViewLayout(VIEW)
    blobs = {p.field: p.encode(r) for p, r in zip(plans, rings, strict=True)}
    for t in (top + 1, top + 7 * MINUTE, top + 70 * MINUTE):
        slots = list(layout.features.values())
        values, missing, newest = fold_view(slots, blobs, t)
        assert newest == top and not any(missing)
        for slot, got in zip(slots, values, strict=True):
            f = VIEW.feature(slot.name)
            evs = [(ts, s, x if f.field else 1.0) for s, (ts, x) in enumerate(events)]
            assert close(got, brute_force(evs, f.fn, t, f.window, f.hop)), (f.name, t)


def test_patched_encoding_equals_full_encoding_across_batches_and_reloads():
    rng = random.Random(9)
    t0 = 1_800_000_000_000_000
    plans = plan_views([VIEW])
    rings = [Ring() for _ in plans]
    seq = 0
    for batch in range(6):  # time moves on, so old tiles are pruned between encodings
        for _ in range(40):
            ts = t0 + batch * 40 * MINUTE + rng.randrange(0, 45 * MINUTE)
            fold(rings, plans, {"x": rng.uniform(0, 9)}, ts, seq)
            seq += 1
        blobs = [p.encode(r) for p, r in zip(plans, rings, strict=True)]
        for p, r, blob in zip(plans, rings, blobs, strict=True):
            assert blob == p.layout.encode(r.newest, r.tiles)
        if batch % 2:  # continue from the stored bytes, as after a cache reload
            rings = [p.decode(b) for p, b in zip(plans, blobs, strict=True)]
