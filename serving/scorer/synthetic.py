"""Synthetic online state for benchmarks, tests and the demo: 3 views, 20 features, N users.

Rings are written exactly as the stream worker writes them (``HopLayout.encode`` over tiles
merged with the aggregation algebra), so reads through ``OnlineStore`` are the real read path.
"""

from __future__ import annotations

import numpy as np

from features.definitions import Aggregate, Entity, EventSource, FeatureRepo, FeatureView
from features.online.layout import GENERATION_FIELD, STORE_KEY, ViewLayout, entity_key
from features.semantics.aggregations import get_aggregation
from features.semantics.windows import HOUR, tile_of

USER = Entity("user", ["user_id"])
TXN = EventSource(
    "txn", {"user_id": "string", "amount": "float", "ts": "timestamp"}, "ts", USER
)
WINDOWS = ["10m", "1h", "24h", "7d"]
VIEWS = [
    FeatureView(
        "txn_counts",
        TXN,
        [Aggregate("count", WINDOWS, name="txn_count_{window}"),
         Aggregate("sum", WINDOWS, field="amount")],
    ),
    FeatureView(
        "txn_spend",
        TXN,
        [Aggregate("mean", WINDOWS[1:], field="amount"),
         Aggregate("max", WINDOWS[1:], field="amount")],
    ),
    FeatureView(
        "txn_spread",
        TXN,
        [Aggregate("min", WINDOWS[1:], field="amount"),
         Aggregate("stddev", WINDOWS[1:], field="amount")],
    ),
]
REPO = FeatureRepo.of(VIEWS)
FEATURES = [f"{v.name}:{f.name}" for v in VIEWS for f in v.features]


def ring_blobs(events: list[tuple[int, float]], views=VIEWS) -> dict[str, bytes]:
    """Hash fields of one entity from its (ts µs, amount) events, as the worker would write."""
    blobs: dict[str, bytes] = {}
    if not events:
        return blobs
    newest = max(ts for ts, _ in events)
    for view in views:
        for hop, hl in ViewLayout(view).hops.items():
            tiles: dict[int, list[float]] = {}
            for seq, (ts, v) in enumerate(events):
                k = tile_of(ts, hop)
                cur = tiles.get(k) or hl.empty_values()
                new: list[float] = []
                for (fn, _), off in zip(hl.parts, hl.offsets, strict=True):
                    agg = get_aggregation(fn)
                    w = agg.width
                    new.extend(agg.merge(tuple(cur[off:off + w]), agg.prepare(v, ts, seq)))
                tiles[k] = new
            blobs[hl.field] = hl.encode(newest, tiles)
    return blobs


def user_events(rng: np.random.Generator, now: int, risky: bool) -> list[tuple[int, float]]:
    """A few days of card transactions; risky users buy more, more often, more recently."""
    n = int(rng.poisson(12 if risky else 5)) + 1
    span = (2 if risky else 8) * 24 * HOUR
    ts = now - rng.integers(1, span, size=n)
    amounts = rng.lognormal(4.0 if risky else 3.2, 0.8, size=n)
    return [(int(t), float(round(a, 2))) for t, a in zip(ts, amounts, strict=True)]


def write_users(client, n: int, now: int, seed: int = 0, batch: int = 2000) -> np.ndarray:
    """Write ``n`` users ``u0..u{n-1}`` and return which are 'risky' (the hidden label)."""
    rng = np.random.default_rng(seed)
    risky = rng.random(n) < 0.2
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        blobs = ring_blobs(user_events(rng, now, bool(risky[i])))
        pipe.hset(entity_key(USER, [f"u{i}"]), mapping=blobs)
        if (i + 1) % batch == 0:
            pipe.execute()
    pipe.hset(STORE_KEY, GENERATION_FIELD, f"synthetic-{seed}")  # as a worker marks its writes
    pipe.execute()
    return risky


def write_training_set(client, path, n: int, risky: np.ndarray, now: int, seed: int = 0) -> None:
    """Training rows for users ``u0..u{n-1}`` from their online features (label = risky).

    Columns follow the training-set builder: entity key, ``ts``, the label, then one column per
    feature named ``view__feature``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.online.read import OnlineStore

    store = OnlineStore(client, REPO)
    rows: list[list] = []
    for lo in range(0, n, 500):
        ents = [{"user_id": f"u{i}"} for i in range(lo, min(n, lo + 500))]
        rows.extend(store.get_features(FEATURES, ents, at_us=now).values)
    rng = np.random.default_rng(seed)
    cols = {
        "user_id": [f"u{i}" for i in range(n)],
        "ts": pa.array(np.sort(now - rng.integers(0, 30 * 24 * HOUR, size=n)),
                       pa.timestamp("us", tz="UTC")),
        "label": risky[:n].astype(np.int64),
    }
    for j, ref in enumerate(FEATURES):
        cols[ref.replace(":", "__")] = pa.array([r[j] for r in rows], pa.float64())
    pq.write_table(pa.table(cols), path)


def write_repo_file(path) -> str:
    """A feature repo file defining these views, for ``--repo`` / ``TESSERA_REPO``."""
    from pathlib import Path

    Path(path).write_text(
        "from serving.scorer.synthetic import VIEWS\ntxn_counts, txn_spend, txn_spread = VIEWS\n"
    )
    return str(path)
