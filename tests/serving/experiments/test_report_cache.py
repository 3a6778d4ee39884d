"""Experiment reports are cached per spec revision, logged data and parameters: a repeated
request is served from the cache, a new spec revision or a new batch of labels builds anew."""

from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.experiments.report import dataset_dirs
from serving.experiments.routes import experiments_router
from serving.experiments.simulate import simulate_log
from serving.experiments.sink import import_frame
from serving.experiments.spec import Arm, DeploymentSpec, DeploymentStore


def test_reports_are_rebuilt_only_when_the_spec_or_the_data_change(tmp_path):
    store = DeploymentStore(tmp_path / "models")
    spec = store.save(DeploymentSpec("fraud", "1", arms=(Arm("challenger", "2", 0.3),),
                                     salt="x"))
    preds, outcomes = simulate_log(spec, 4000, {"1": 1.5, "2": 0.5}, labelled=0.5, seed=1)
    pred_dir, out_dir = dataset_dirs(tmp_path / "offline")
    import_frame(pred_dir, preds)
    import_frame(out_dir, outcomes.head(500))
    router = experiments_router(tmp_path / "models", tmp_path / "offline")
    app = FastAPI()
    app.include_router(router)
    client = TestClient(app)
    cache = router.report_cache

    first = client.get("/v1/experiments/fraud", params={"reps": 20}).json()
    assert client.get("/v1/experiments/fraud", params={"reps": 20}).json() == first
    assert cache.builds == 1  # the second request did no work
    client.get("/v1/experiments/fraud", params={"reps": 30})
    assert cache.builds == 2  # other parameters, another report

    import_frame(out_dir, outcomes.slice(500))  # more labels arrive
    more = client.get("/v1/experiments/fraud", params={"reps": 20}).json()
    assert cache.builds == 3
    labelled = [a["labelled"] for a in first["arms"]]
    assert [a["labelled"] for a in more["arms"]] != labelled

    store.save(DeploymentSpec("fraud", "1", salt="x"), why="stop the arm")  # a new revision
    client.get("/v1/experiments/fraud", params={"reps": 20})
    assert cache.builds == 4
