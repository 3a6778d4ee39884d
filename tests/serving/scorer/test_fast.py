"""The fast single-row path scores exactly like Booster.predict; the fallback does too."""

import lightgbm as lgb
import numpy as np

from serving.scorer.fast import FastPredictor


def _model(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5000, 20))
    x[rng.random(x.shape) < 0.05] = np.nan
    y = (x[:, 0] - np.nan_to_num(x[:, 3]) + rng.normal(size=5000) > 0).astype(float)
    params = {"objective": "binary", "verbosity": -1, "num_threads": 1, "num_leaves": 15}
    return lgb.train(params, lgb.Dataset(x, y), 300), rng


def test_fast_single_row_equals_booster_predict_on_thousands_of_rows():
    booster, rng = _model()
    x = rng.normal(size=(3000, 20)) * 2
    x[rng.random(x.shape) < 0.1] = np.nan
    want = booster.predict(x)
    fast = FastPredictor(booster)
    slow = FastPredictor(booster, fast=False)
    assert fast.is_fast and not slow.is_fast
    got = np.array([fast.predict_one(np.ascontiguousarray(r)) for r in x])
    assert np.abs(got - want).max() <= 1e-9
    assert np.abs(np.array([slow.predict_one(r) for r in x[:200]]) - want[:200]).max() <= 1e-9
    assert np.abs(fast.predict(x) - want).max() <= 1e-9
    assert np.abs(fast.predict(x[:1]) - want[:1]).max() <= 1e-9
    fast.close()
    assert not fast.is_fast and abs(fast.predict_one(x[0]) - want[0]) <= 1e-9
