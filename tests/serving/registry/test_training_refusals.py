"""`train` refuses runs that used to be registered silently, each with a typed, actionable error;
progress reporting does not change the model."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.registry.errors import TrainingRefused
from serving.registry.training import train
from tests.serving.registry.helpers import write_training_set

FAST = {"num_iterations": 10, "num_leaves": 7}


def _set(path, y):
    n = len(y)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    x = np.random.default_rng(0).normal(size=n)
    pq.write_table(pa.table({
        "ts": pa.array([start + timedelta(minutes=i) for i in range(n)],
                       pa.timestamp("us", tz="UTC")),
        "v__x": x, "label": y}), path)
    return path


def test_continuous_label_for_binary(tmp_path):
    y = np.random.default_rng(1).exponential(size=1000)
    with pytest.raises(TrainingRefused, match="objective 'binary' needs 0/1") as e:
        train(_set(tmp_path / "t.parquet", y), "label", params=FAST)
    assert e.value.reason == "label_objective"
    # the same values as probabilities in [0, 1] are fine for cross_entropy, not beyond
    with pytest.raises(TrainingRefused, match="needs values in \\[0, 1\\]"):
        train(tmp_path / "t.parquet", "label", params={**FAST, "objective": "xentropy"})


def test_unknown_and_unsupported_parameters(tmp_path):
    path = tmp_path / "t.parquet"
    write_training_set(path, n=600)
    with pytest.raises(TrainingRefused, match="'num_leafs' \\(did you mean") as e:
        train(path, "is_fraud", params={"num_leafs": 7})
    assert e.value.reason == "unknown_param"
    with pytest.raises(TrainingRefused, match="objective 'regression' is not supported"):
        train(path, "is_fraud", params={**FAST, "objective": "regression"})
    with pytest.raises(TrainingRefused, match="given twice"):
        train(path, "is_fraud", params={"num_leaves": 7, "num_leaf": 9})
    # aliases are accepted and stored under LightGBM's canonical names
    res = train(path, "is_fraud", params={"n_estimators": 5, "num_leaf": 5})
    assert res.params["num_iterations"] == 5 and res.params["num_leaves"] == 5


def test_holdout_below_minimum(tmp_path, monkeypatch):
    write_training_set(tmp_path / "t.parquet", n=400)  # 80 holdout rows
    with pytest.raises(TrainingRefused, match="holdout has 80 rows .* fewer than 100") as e:
        train(tmp_path / "t.parquet", "is_fraud", params=FAST)
    assert e.value.reason == "holdout_too_small"
    assert train(tmp_path / "t.parquet", "is_fraud", params=FAST, min_holdout_rows=50)
    monkeypatch.setenv("TESSERA_MIN_HOLDOUT_ROWS", "81")
    with pytest.raises(TrainingRefused, match="fewer than 81"):
        train(tmp_path / "t.parquet", "is_fraud", params=FAST, min_holdout_rows=None)


def test_nan_metric(tmp_path):
    y = np.r_[np.random.default_rng(2).integers(0, 2, 800), np.zeros(200)].astype(int)
    with pytest.raises(TrainingRefused, match="holdout auc .* NaN .*label values: 0") as e:
        train(_set(tmp_path / "t.parquet", y), "label", params=FAST)
    assert e.value.reason == "nan_metric"


def test_progress_reports_iterations_and_keeps_the_model(tmp_path):
    write_training_set(tmp_path / "t.parquet", n=1000)
    seen = []
    a = train(tmp_path / "t.parquet", "is_fraud", params={"num_iterations": 25}, seed=3,
              progress=lambda i, n, m: seen.append((i, n, m["auc"])), progress_every=10)
    b = train(tmp_path / "t.parquet", "is_fraud", params={"num_iterations": 25}, seed=3)
    assert [(i, n) for i, n, _ in seen] == [(10, 25), (20, 25), (25, 25)]
    assert seen[-1][2] == pytest.approx(a.metrics["auc"])
    assert a.model_text == b.model_text
