"""Small real LightGBM boosters for tests and the benchmark (trained in well under a second)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np


def train_boosters(
    n_features: int = 8, rounds: tuple[int, ...] = (20, 40), seed: int = 0, rows: int = 2000
) -> tuple[list[lgb.Booster], np.ndarray]:
    """One booster per entry of ``rounds`` on the same synthetic data; returns them and X."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, n_features))
    logit = x[:, 0] - 0.5 * x[:, 1] + 0.3 * x[:, 2] * x[:, 3]
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": seed}
    boosters = [
        lgb.train(params, lgb.Dataset(x, y), num_boost_round=r) for r in rounds
    ]
    return boosters, x
