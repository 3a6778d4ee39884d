"""Windowed + materialized batch + request-time features on a real stream: what the scorer
computes per request equals what ``training_set()`` computes for the same (entity, time,
request), and a model trained on that training set scores the same over HTTP. Errors: an
absent request field is a 422 naming it, a request feature that raises names its view."""

from __future__ import annotations

import time

import httpx
import numpy as np
import polars as pl
import pytest

from features.offline.training_set import build_training_set, write_training_set
from features.online.materialize import materialize_view
from features.online.read import OnlineStore
from features.settings import Settings
from serving.http.app import create_app, fast_app
from serving.registry import ModelRegistry
from serving.registry.training import train
from serving.scorer.models import ModelSet
from serving.scorer.scorer import Scorer
from tests.serving.http.conftest import running
from tests.streams.test_worker import Produced, produce, wait_done

pytestmark = pytest.mark.integration

EXTRA = '''
import numpy as np
from features import BatchFeatureView
from features.request import request_feature

profile = BatchFeatureView("profile", entity=user, path={path!r}, timestamp_field="ts",
                           schema={{"limit": "float", "age": "int"}}, ttl="30d")


@request_feature(["ratio_10m", "over_limit", "scaled"], request=["amount"],
                 inputs={{"mean": "spend:amount_mean_10m", "limit": "profile:limit",
                          "n": "counts:count_2h"}})
def txn_now(amount, mean, limit, n):
    return {{"ratio_10m": amount / mean, "over_limit": (amount > limit).astype(float),
             "scaled": np.log1p(amount) * n}}


@request_feature("x", request=["amount"])
def boom(amount):
    raise ValueError("cannot score this")
'''
REFS = ["counts:count_10m", "spend:amount_sum_2h", "spend:amount_mean_10m", "profile:limit",
        "profile:age", "txn_now:ratio_10m", "txn_now:over_limit", "txn_now:scaled"]


def _matrix(df: pl.DataFrame, refs: list[str]) -> np.ndarray:
    cols = [r.replace(":", "__") for r in refs]
    return df.select([pl.col(c).cast(pl.Float64) for c in cols]).to_numpy()


def test_served_vectors_equal_the_training_set(stream_env, redis_client):
    env = stream_env
    rng = np.random.default_rng(7)
    users = [f"u{i}" for i in range(150)]
    now = time.time_ns() // 1000
    (env.home / "batch").mkdir()
    pl.DataFrame({"user_id": users[:120], "ts": rng.integers(now - 40 * 86_400_000_000, now, 120),
                  "limit": rng.lognormal(5, 1, 120), "age": rng.integers(1, 900, 120)}
                 ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC"))).write_parquet(
        env.home / "batch" / "profile.parquet")
    env.repo_path.write_text(env.repo_path.read_text()
                             + EXTRA.format(path=str(env.home / "batch" / "profile.parquet")))
    repo = env.repo
    produced = Produced()
    produce(env, produced, 1500, seed=5)
    env.start_worker(max_records=1000)
    wait_done(env, redis_client, produced)
    report = materialize_view(redis_client, repo.views["profile"], env.home)
    assert report.entities > 50  # the rest expired (older than 30 d) or have no row
    t = time.time_ns() // 1000
    sample = [users[i] for i in rng.choice(150, 60, replace=False)]
    amounts = [None if i % 10 == 0 else float(a)
               for i, a in enumerate(rng.lognormal(3, 1, len(sample)))]
    rf = [{"amount": a} for a in amounts]
    settings = Settings(env.home)

    def offline(refs):
        spine = pl.DataFrame({"user_id": sample, "ts": [t] * len(sample), "amount": amounts},
                             schema={"user_id": pl.String, "ts": pl.Int64, "amount": pl.Float64}
                             ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
        return build_training_set(spine, refs, repo=repo, settings=settings)

    # the scorer's vectors (one Redis round trip, request features computed) vs training_set
    from serving.scorer.models import LoadedModel

    scorer = Scorer(OnlineStore(redis_client, repo), None)
    plan = scorer.plan(LoadedModel("m", "1", tuple(REFS), None, {}))
    x, _ = scorer.vectors(plan, [{"user_id": u} for u in sample], rf, at_us=t)
    off = _matrix(offline(REFS).frame, REFS)
    assert np.isnan(x).sum() > 0 and (~np.isnan(x)).sum() > 300
    assert np.array_equal(np.isnan(x), np.isnan(off))
    exact = [0, 3, 4, 6]  # counts, batch values and a comparison: bit for bit
    assert np.array_equal(x[:, exact], off[:, exact], equal_nan=True)
    # sums/means fold tiles in another grouping than the log (docs/semantics.md): 1e-9
    assert np.allclose(x, off, rtol=1e-9, atol=0, equal_nan=True)

    # a model trained on that training set, served over HTTP: the same scores
    built = offline(REFS)
    labelled = built.frame.with_columns(pl.Series("label", rng.random(len(sample)) < 0.4
                                                  ).cast(pl.Int8))
    path = write_training_set(labelled, env.home / "train.parquet", built.fingerprint)
    res = train(path, "label", REFS, "ts", {"num_iterations": 5, "num_leaves": 4,
                                             "min_data_in_leaf": 3}, 1, 0.2,
                min_holdout_rows=1)
    reg = ModelRegistry(env.home / "models")
    reg.register("fraud", res.model_text, res.metadata())
    reg.register("broken", res.model_text, {**res.metadata(), "features": REFS[:-1] + ["boom:x"]})
    models = ModelSet(reg)
    reg.register("unservable", res.model_text,
                 {**res.metadata(), "features": REFS[:-1] + ["nowhere:x"]})
    models.serve("fraud", "1")
    models.serve("broken", "1")
    app = fast_app(create_app(Scorer(OnlineStore(redis_client, repo), models)))
    with running(app) as url:
        r = httpx.post(f"{url}/v1/predict/fraud", json={
            "entities": [{"user_id": u} for u in sample[:5]], "request_features": rf[:5],
            "at": t / 1000})
        assert r.status_code == 200, r.text
        want = models.get("fraud").predictor.predict(off[:5])
        assert np.allclose([p["score"] for p in r.json()["predictions"]], want, rtol=1e-9)
        r = httpx.post(f"{url}/v1/predict/fraud", json={
            "entities": [{"user_id": "u1"}, {"user_id": "u2"}],
            "request_features": [{"amount": 3.0}, {"amt": 3.0}]})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["code"] == "missing_request_field"
        assert body["field"] == "request_features[1].amount" and "'amount'" in body["error"]
        r = httpx.post(f"{url}/v1/predict/broken", json={
            "entities": [{"user_id": "u1"}], "request_features": [{"amount": 3.0}]})
        assert r.status_code == 500 and r.json()["code"] == "request_feature_failed", r.text
        assert "'boom'" in r.json()["error"] and "cannot score this" in r.json()["error"]
        r = httpx.get(f"{url}/readyz")  # every model is plannable: ready
        assert r.status_code == 200 and r.json()["ready"], r.text
        models.serve("unservable", "1")  # a ref no view defines: not ready, and why
        r = httpx.get(f"{url}/readyz")
        problems = r.json()["problems"]
        assert r.status_code == 503 and any(
            p.startswith("unservable:") and "'nowhere:x'" in p for p in problems), r.text
