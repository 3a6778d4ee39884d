"""Training is deterministic and evaluated on the newest rows; versions are immutable; aliases
are audited; storage works through a pyarrow filesystem URI as well as a plain folder."""

import json

import lightgbm as lgb
import numpy as np
import pytest

from features.errors import RegistryError
from features.offline.training_set import read_fingerprint
from serving.monitoring.reference import ModelReference
from serving.registry import ModelRegistry, set_alias
from serving.registry.training import train
from tests.serving.registry.helpers import write_training_set

PARAMS = {"num_iterations": 40, "num_leaves": 7, "bagging_fraction": 0.8, "bagging_freq": 1,
          "feature_fraction": 0.8}


@pytest.fixture
def train_path(tmp_path):
    p = tmp_path / "train.parquet"
    write_training_set(p)
    return p


def test_training_is_deterministic_and_describes_the_model(train_path):
    a = train(train_path, "is_fraud", params=PARAMS, seed=7)
    b = train(train_path, "is_fraud", params=PARAMS, seed=7)
    c = train(train_path, "is_fraud", params=PARAMS, seed=8)
    assert a.model_text == b.model_text
    assert a.model_text != c.model_text
    assert a.features == [
        "txn_counts:txn_count_1h", "txn_spend:amount_mean_1h", "txn_spread:amount_min_1h"
    ]
    m = a.metrics
    assert m["train_rows"] == 3200 and m["holdout_rows"] == 800
    assert m["holdout_from"].startswith("2026-01-03")  # the newest fifth of 4000 minutes
    assert 0.7 < m["auc"] <= 1.0 and 0 < m["logloss"] < 0.69
    ref = ModelReference.from_dict(a.reference)
    assert list(ref.features) == a.features and ref.score is not None
    assert ref.features["txn_spread:amount_min_1h"].null_rate == pytest.approx(0.1, abs=0.03)
    assert read_fingerprint(train_path) == "fp123"


def test_versions_are_immutable_and_aliases_audited(tmp_path, train_path):
    reg = ModelRegistry(tmp_path / "models")
    res = train(train_path, "is_fraud", params=PARAMS, seed=1)
    v1 = reg.register("fraud", res.model_text, res.metadata())
    v2 = reg.register("fraud", res.model_text, {**res.metadata(), "note": "second"})
    assert (v1.version, v2.version) == ("1", "2")
    assert reg.versions("fraud") == ["1", "2"] and reg.models() == ["fraud"]
    assert reg.get("fraud", "1").metadata.get("note") is None
    assert reg.resolve("fraud", "latest") == "2"
    with pytest.raises(RegistryError, match="no alias 'champion'"):
        reg.get("fraud")
    reg.set_alias("fraud", "champion", "1", who="ann", why="first model")
    set_alias(tmp_path / "models", "fraud", "champion", "2", who="bob", why="better AUC")
    assert reg.get("fraud").version == "2"
    log = reg.audit("fraud")
    assert [(e["who"], e["before"], e["after"], e["why"]) for e in log] == [
        ("ann", None, "1", "first model"), ("bob", "1", "2", "better AUC")
    ]
    with pytest.raises(RegistryError, match="no version 9"):
        reg.set_alias("fraud", "champion", "9")
    # the stored model is LightGBM text and predicts like the trained one
    booster = reg.get("fraud", "1").booster()
    assert reg.storage.read_bytes("fraud/versions/1/model.txt").startswith(b"tree")
    x = np.random.default_rng(0).normal(size=(50, 3))
    want = lgb.Booster(model_str=res.model_text).predict(x)
    np.testing.assert_allclose(booster.predict(x), want, rtol=0, atol=0)


def test_storage_through_a_filesystem_uri(tmp_path, train_path):
    uri = f"file://{tmp_path}/remote-models"
    reg = ModelRegistry(uri)
    res = train(train_path, "is_fraud", params=PARAMS, seed=1)
    reg.register("fraud", res.model_text, res.metadata())
    reg.set_alias("fraud", "champion", "1", why="uri test")
    again = ModelRegistry(uri)
    assert again.get("fraud").model_text == res.model_text
    meta = json.loads((tmp_path / "remote-models/fraud/versions/1/metadata.json").read_text())
    assert meta["lightgbm_version"] == lgb.__version__ and meta["params"]["seed"] == 1
