"""Tile folding (pure): batch folds equal the algebra's event-by-event merges, the stored rings
equal the layout's encoding, and reads of the folded rings equal a brute-force reference."""

from __future__ import annotations

import random

import numpy as np
import pytest

from features import Aggregate, Entity, EventSource, FeatureView
from features.online.fold import fold_view
from features.online.layout import ViewLayout
from features.semantics.aggregations import AGGREGATIONS, get_aggregation
from features.semantics.windows import MINUTE, tile_of
from streams.worker.tiles import RingCache, fold_batch, plan_views
from tests.reference import brute_force, close

user = Entity("user", keys=["user_id"])
src = EventSource("s", {"user_id": "string", "x": "float", "ts": "timestamp"}, "ts", user)
W = ["10m", "2h"]
VIEW = FeatureView("v", src, [Aggregate(fn, W, field=None if fn == "count" else "x")
                              for fn in sorted(AGGREGATIONS)])
PLANS = plan_views([VIEW])


def algebra_rings(events):
    """Per plan and entity: newest ts and tiles, merged one event at a time by the algebra,
    keeping the tiles newer than the ring's newest tile minus its slots."""
    out = []
    for p in PLANS:
        per = {}
        for seq, (ent, ts, x) in enumerate(events):
            newest, tiles = per.get(ent, (None, {}))
            idx = tile_of(ts, p.layout.hop)
            tile = list(tiles.get(idx, p.layout.empty_values()))
            for (fn, _), a in zip(p.layout.parts, p.layout.offsets, strict=True):
                agg = get_aggregation(fn)
                tile[a:a + agg.width] = agg.merge(tuple(tile[a:a + agg.width]),
                                                  agg.prepare(x, ts, seq))
            tiles[idx] = tile
            per[ent] = (ts if newest is None else max(newest, ts), tiles)
        kept = {}
        for ent, (newest, tiles) in per.items():
            top = max(tiles)
            kept[ent] = (newest, {i: t for i, t in tiles.items() if i > top - p.layout.slots})
        out.append(kept)
    return out


def fold_in_batches(cache, events, rng):
    """Fold ``events`` (entity, ts, x) through ``fold_batch`` in random batch splits."""
    lo = 0
    while lo < len(events):
        hi = min(len(events), lo + rng.randrange(1, 80))
        new = sorted({e for e, _, _ in events[lo:hi]} - set(cache.rows))
        cache.add(new, [0] * len(new), [[None] * len(PLANS) for _ in new])
        rows = np.array([cache.rows[e] for e, _, _ in events[lo:hi]], dtype=np.int64)
        ts = np.array([t for _, t, _ in events[lo:hi]], dtype=np.int64)
        seq = np.arange(lo, hi, dtype=np.int64)
        cols = {"x": np.array([x for _, _, x in events[lo:hi]], dtype=np.float64)}
        for plan, arr in zip(PLANS, cache.arrays, strict=True):
            fold_batch(arr, plan, rows, ts, seq, cols)
        lo = hi


def random_events(rng, n_entities=4):
    t0 = 1_800_000_000_000_000
    events = [(f"e{rng.randrange(n_entities)}", t0 + rng.randrange(0, 150 * MINUTE),
               round(rng.uniform(-50, 500), 2)) for _ in range(rng.randrange(1, 300))]
    events.insert(rng.randrange(len(events) + 1), (events[0][0], events[0][1], 1.0))  # tie
    return events


@pytest.mark.parametrize("seed", range(6))
def test_batch_fold_matches_algebra_and_brute_force(seed):
    rng = random.Random(seed)
    events = random_events(rng)
    cache = RingCache(PLANS, capacity=2)  # grows while folding
    fold_in_batches(cache, events, rng)
    ref = algebra_rings(events)
    layout = ViewLayout(VIEW)
    for ent in {e for e, _, _ in events}:
        blobs = {}
        for p, arr, per in zip(PLANS, cache.arrays, ref, strict=True):
            blob = arr[cache.rows[ent]].tobytes()
            newest, tiles = per[ent]
            assert blob == p.layout.encode(newest, tiles), (ent, p.field)
            blobs[p.layout.field] = blob
        mine = [(ts, s, x) for s, (e, ts, x) in enumerate(events) if e == ent]
        top = max(ts for ts, _, _ in mine)
        for t in (top + 1, top + 7 * MINUTE, top + 70 * MINUTE):
            slots = list(layout.features.values())
            values, missing, newest = fold_view(slots, blobs, t)
            assert newest == top and not any(missing)
            for slot, got in zip(slots, values, strict=True):
                f = VIEW.feature(slot.name)
                evs = [(ts, s, x if f.field else 1.0) for ts, s, x in mine]
                want = brute_force(evs, f.fn, t, f.window, f.hop)
                exact = get_aggregation(f.fn).exact  # e.g. first/last: no rounding at all
                assert got == want if exact else close(got, want), (f.name, t, got, want)


def test_rings_survive_a_reload_from_stored_bytes_and_dropped_partitions():
    rng = random.Random(9)
    events = random_events(rng, n_entities=6)
    half = len(events) // 2
    cache = RingCache(PLANS)
    fold_in_batches(cache, events[:half], rng)
    stored = {e: [arr[r].tobytes() for arr in cache.arrays] for e, r in cache.rows.items()}
    cache.drop([0])  # everything was partition 0
    assert len(cache) == 0
    reloaded = RingCache(PLANS)
    keys = sorted(stored)
    reloaded.add(keys, [0] * len(keys), [stored[k] for k in keys])
    # continue both: the reloaded cache and a fresh one that sees every event
    fresh = RingCache(PLANS)
    fold_in_batches(fresh, events, random.Random(1))
    seqd = [(e, t, x) for e, t, x in events]
    rows = np.array([reloaded.rows.get(e, -1) for e, _, _ in seqd[half:]])
    new = sorted({e for e, _, _ in seqd[half:]} - set(reloaded.rows))
    reloaded.add(new, [0] * len(new), [[None] * len(PLANS) for _ in new])
    rows = np.array([reloaded.rows[e] for e, _, _ in seqd[half:]], dtype=np.int64)
    ts = np.array([t for _, t, _ in seqd[half:]], dtype=np.int64)
    seq = np.arange(half, len(events), dtype=np.int64)
    cols = {"x": np.array([x for _, _, x in seqd[half:]], dtype=np.float64)}
    for plan, arr in zip(PLANS, reloaded.arrays, strict=True):
        fold_batch(arr, plan, rows, ts, seq, cols)
    for e in fresh.rows:
        for a, b in zip(fresh.arrays, reloaded.arrays, strict=True):
            assert a[fresh.rows[e]].tobytes() == b[reloaded.rows[e]].tobytes()


def test_eviction_frees_only_clean_rows_older_than_the_cutoff():
    cache = RingCache(PLANS, capacity=4)
    t0 = 1_800_000_000_000_000
    cache.add(["old", "new", "dirty"], [0, 0, 0], [[None] * len(PLANS)] * 3)
    rows = np.array([cache.rows[k] for k in ("old", "new", "dirty")], dtype=np.int64)
    ts = np.array([t0, t0 + 100 * MINUTE, t0], dtype=np.int64)
    for plan, arr in zip(PLANS, cache.arrays, strict=True):
        fold_batch(arr, plan, rows, ts, np.arange(3), {"x": np.ones(3)})
    cache.dirty[cache.rows["dirty"]] = True
    assert cache.evict(t0 + MINUTE) == 1
    assert set(cache.rows) == {"new", "dirty"}
    cache.add(["again"], [0], [[None] * len(PLANS)])  # the freed row is reused
    assert len(cache.keys) == 3 and cache.rows["again"] not in (cache.rows["new"],
                                                                cache.rows["dirty"])
