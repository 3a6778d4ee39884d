"""Synthetic model inputs where the truth is known: a training sample and live windows.

Used by the tests, the benchmark and the demo: four features of different shapes (normal,
Poisson counts, a 0/1 flag, a lognormal with 2 % missing) and the score of a fixed logistic
model, with drift injected as a shift of ``amount``.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

FEATURES = ("amount", "txn_count_24h", "has_card", "spend_7d")


def draw(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    """``n`` rows of four features of different shapes and the score of a fixed logistic model.

    ``shift`` moves ``amount`` (a normal) by that many standard deviations: the injected drift.
    """
    amount = rng.normal(50.0 + 20.0 * shift, 20.0, n)
    count = rng.poisson(3.0, n).astype(float)  # many ties: a discrete feature
    flag = (rng.random(n) < 0.3).astype(float)  # a 0/1 feature
    spend = rng.lognormal(4.0, 1.0, n)
    spend[rng.random(n) < 0.02] = np.nan  # 2 % missing at training time too
    z = 0.03 * (amount - 50.0) + 0.2 * (count - 3.0) + 0.5 * flag - 1.0
    score = 1 / (1 + np.exp(-z))
    return {
        "amount": amount,
        "txn_count_24h": count,
        "has_card": flag,
        "spend_7d": spend,
        "score": score,
    }


def reference_columns(seed: int = 12345, n: int = 20_000) -> dict[str, np.ndarray]:
    return draw(np.random.default_rng(seed), n)


def prediction_log(
    seed: int, n: int, shift: float = 0.0, model: str = "fraud", version: str = "3", t0: int = 0
) -> pl.DataFrame:
    """``n`` champion predictions with the prediction log's schema (vector as a list column)."""
    from serving.experiments.records import PREDICTION_SCHEMA

    cols = draw(np.random.default_rng(seed), n, shift)
    vectors = np.column_stack([cols[f] for f in FEATURES])
    rows = {
        "request_id": [f"r{seed}-{i}" for i in range(n)],
        "ts": (t0 + np.arange(n, dtype=np.int64) * 1000).tolist(),
        "entity_key": [f"user=u{i % 997}" for i in range(n)],
        "model": [model] * n,
        "version": [version] * n,
        "role": ["champion"] * n,
        "arm": ["champion"] * n,
        "score": cols["score"].tolist(),
        "latency_ms": [1.0] * n,
        "error": [None] * n,
        "features_hash": [""] * n,
        "features": [[None if np.isnan(v) else float(v) for v in row] for row in vectors],
    }
    return pl.from_arrow(pa.Table.from_pydict(rows, schema=PREDICTION_SCHEMA))
