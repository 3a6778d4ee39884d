"""The experiment router inside the real scorer (Redis features, registry models), and the
report over HTTP."""

import threading

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from features.online.read import OnlineStore
from serving.experiments.assign import assign
from serving.experiments.errors import ExperimentError
from serving.experiments.records import expand
from serving.experiments.report import dataset_dirs
from serving.experiments.routes import experiments_router
from serving.experiments.simulate import simulate_log
from serving.experiments.sink import import_frame
from serving.experiments.spec import Arm, DeploymentSpec, DeploymentStore
from serving.experiments.wiring import attach_deployed, attach_router
from serving.scorer.models import ModelSet
from serving.scorer.scorer import Scorer
from serving.scorer.synthetic import REPO
from tests.serving.scorer.world import make_world


@pytest.mark.integration
def test_scorer_serves_arms_and_shadows(redis_client, tmp_path):
    client, reg, now = make_world(redis_client, tmp_path)
    models = ModelSet(reg)
    models.serve("fraud")
    scorer = Scorer(OnlineStore(client, REPO), models)
    store = DeploymentStore(tmp_path / "models")
    spec = store.save(
        DeploymentSpec("fraud", "1", arms=(Arm("b", "2", 0.5),), shadows=("2",), salt="s")
    )
    logged, lock = [], threading.Lock()

    def log(item):
        with lock:
            logged.extend(expand([item]))

    router = attach_router(scorer, store, "fraud", log=log)
    ents = [{"user_id": f"u{i}"} for i in range(60)]
    out = scorer.predict("fraud", ents, at_us=now)["predictions"]
    router.close()
    feats = list(models.get("fraud").features)
    res = OnlineStore(client, REPO).get_features(feats, ents, at_us=now)
    x = np.array([[np.nan if v is None else v for v in row] for row in res.values])
    want = {v: reg.get("fraud", v).booster().predict(x) for v in ("1", "2")}
    for i, p in enumerate(out):
        arm, version = assign(spec, ents[i]["user_id"])
        assert (p["arm"], p["version"]) == (arm, version)
        assert p["score"] == pytest.approx(want[version][i], abs=1e-9)
    assert {p["arm"] for p in out} == {"champion", "b"}
    shadows = [r for r in logged if r.role == "shadow"]
    served = [r for r in logged if r.role != "shadow"]
    assert len(served) == 60 and len(shadows) == 60
    assert all(r.version == "2" for r in shadows)


@pytest.mark.integration
def test_attach_deployed_routes_only_models_with_a_spec(redis_client, tmp_path):
    client, reg, now = make_world(redis_client, tmp_path)
    models = ModelSet(reg)
    models.serve("fraud")
    scorer = Scorer(OnlineStore(client, REPO), models)
    assert attach_deployed(scorer, tmp_path / "models", None) == {}
    DeploymentStore(tmp_path / "models").save(DeploymentSpec("fraud", "1", shadows=("2",)))
    routers = attach_deployed(scorer, tmp_path / "models", None)
    assert scorer.routers == routers and list(routers) == ["fraud"]
    p = scorer.predict("fraud", [{"user_id": "u1"}], at_us=now)["predictions"][0]
    assert (p["arm"], p["version"]) == ("champion", "1")
    routers["fraud"].close()
    assert routers["fraud"].shadows.scored == 1


@pytest.mark.integration
def test_versions_with_other_features_are_refused(redis_client, tmp_path):
    client, reg, now = make_world(redis_client, tmp_path)
    v1 = reg.get("fraud", "1")
    reg.register("fraud", v1.model_text, {**v1.metadata, "features": v1.features[::-1]})
    models = ModelSet(reg)
    models.serve("fraud")
    scorer = Scorer(OnlineStore(client, REPO), models)
    store = DeploymentStore(tmp_path / "models")
    store.save(DeploymentSpec("fraud", "1", shadows=("3",)))
    with pytest.raises(ExperimentError, match="v3 takes different features"):
        attach_router(scorer, store, "fraud")
    assert scorer.routers == {}


def test_experiment_report_over_http(tmp_path):
    spec = DeploymentStore(tmp_path / "models").save(
        DeploymentSpec("fraud", "1", arms=(Arm("challenger", "2", 0.3),), salt="x")
    )
    preds, outcomes = simulate_log(spec, 20_000, {"1": 1.5, "2": 0.5}, labelled=0.5)
    for frame, folder in zip((preds, outcomes), dataset_dirs(tmp_path / "offline"), strict=True):
        import_frame(folder, frame)
    app = FastAPI()
    app.include_router(experiments_router(tmp_path / "models", tmp_path / "offline"))
    http = TestClient(app)
    r = http.get("/v1/experiments/fraud", params={"reps": 20})
    assert r.status_code == 200
    arm = r.json()["arms"][0]["vs_champion"]
    assert arm["verdict"]["word"] == "better"
    seq = arm["sequential"]  # the anytime-valid decision, with its interval over time
    both = r.json()["arms"][0]["labelled"] + r.json()["champion"]["labelled"]
    assert seq["decision"] == "better" and seq["labels"] == both
    assert seq["decided_at"] <= seq["labels"] and len(seq["logloss"]["path"]) > 10
    assert all(len(p) == 3 and p[1] <= p[2] for p in seq["logloss"]["path"])
    missing = http.get("/v1/experiments/nope")
    assert missing.status_code == 404 and "tessera deploy nope" in missing.json()["detail"]
