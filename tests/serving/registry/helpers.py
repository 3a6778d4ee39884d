"""A small synthetic training set with the shape the training-set builder writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def write_training_set(path: Path, n: int = 4000, seed: int = 0, fingerprint: str = "fp123"):
    rng = np.random.default_rng(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    x1 = rng.normal(size=n)
    x2 = rng.exponential(size=n)
    x3 = np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n))
    logit = 1.5 * x1 - x2 + np.nan_to_num(x3)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    table = pa.table(
        {
            "user_id": [f"u{i % 500}" for i in range(n)],
            "ts": pa.array([start + timedelta(minutes=i) for i in range(n)],
                           pa.timestamp("us", tz="UTC")),
            "txn_counts__txn_count_1h": x1,
            "txn_spend__amount_mean_1h": x2,
            "txn_spread__amount_min_1h": x3,
            "is_fraud": y,
        }
    )
    table = table.replace_schema_metadata({b"tessera.fingerprint": fingerprint.encode()})
    pq.write_table(table, path)
    return table


def write_segmented_set(path: Path, n: int = 2000, seed: int = 0, noisy: str = "B",
                        shuffle_all: bool = False):
    """Rows in two countries; in ``noisy`` the label ignores the features, so a model is good
    on the other country only (``shuffle_all``: on neither)."""
    rng = np.random.default_rng(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    country = np.where(rng.random(n) < 0.5, "A", "B")
    y = (rng.random(n) < 1 / (1 + np.exp(-(2 * x1 - x2)))).astype(np.int64)
    bad = np.ones(n, bool) if shuffle_all else country == noisy
    y[bad] = (rng.random(bad.sum()) < 0.4).astype(np.int64)
    pq.write_table(pa.table({
        "ts": pa.array([start + timedelta(minutes=i) for i in range(n)],
                       pa.timestamp("us", tz="UTC")),
        "v__x1": x1, "v__x2": x2, "country": country, "label": y,
    }), path)
