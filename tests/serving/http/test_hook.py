"""serve.hook: a module:function run with the scorer in every worker."""

import pytest

from features.errors import TesseraError
from serving.http.main import ServeConfig, build_scorer
from serving.scorer.synthetic import write_repo_file

pytestmark = pytest.mark.integration

class _Router:
    def score(self, entity_key, x, request_id=None):
        raise AssertionError("not called here")


def attach(scorer):
    scorer.routers["fraud"] = _Router()


def test_hook_attaches_a_router(tmp_path, redis_client, redis_url):
    from tests.serving.scorer.world import make_world

    _, reg, _ = make_world(redis_client, tmp_path)
    repo = tmp_path / "repo.py"
    write_repo_file(repo)
    cfg = ServeConfig(redis_url, str(reg.storage.root), ["fraud"], str(repo),
                      hook="tests.serving.http.test_hook:attach")
    scorer = build_scorer(cfg)
    try:
        assert isinstance(scorer.routers["fraud"], _Router)
    finally:
        scorer.models.close()
    with pytest.raises(TesseraError, match="cannot be loaded"):
        build_scorer(ServeConfig(redis_url, str(reg.storage.root), ["fraud"], str(repo),
                                 hook="tests.serving.http.test_hook:nope")).models.close()


def test_deployed_experiments_are_attached_at_start(tmp_path, redis_client, redis_url,
                                                    monkeypatch):
    from serving.experiments.router import ExperimentRouter
    from serving.experiments.spec import Arm, DeploymentSpec, DeploymentStore
    from tests.serving.scorer.world import make_world

    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)  # no broker: routed, not logged
    _, reg, now = make_world(redis_client, tmp_path)
    DeploymentStore(reg.storage.root).save(
        DeploymentSpec("fraud", "1", arms=(Arm("b", "2", 0.5),), salt="s"), why="test"
    )
    cfg = ServeConfig(redis_url, str(reg.storage.root), ["fraud"],
                      write_repo_file(tmp_path / "repo.py"))
    scorer = build_scorer(cfg)
    try:
        assert isinstance(scorer.routers["fraud"], ExperimentRouter)
        out = scorer.predict("fraud", [{"user_id": f"u{i}"} for i in range(40)], at_us=now)
        assert {p["version"] for p in out["predictions"]} == {"1", "2"}
    finally:
        scorer.models.close()
        scorer.routers["fraud"].close()


def test_served_app_exposes_the_experiment_report(tmp_path, redis_client, redis_url,
                                                  monkeypatch):
    from starlette.testclient import TestClient

    from serving.experiments.spec import Arm, DeploymentSpec, DeploymentStore
    from serving.http.main import build_app
    from tests.serving.scorer.world import make_world

    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    _, reg, _ = make_world(redis_client, tmp_path)
    DeploymentStore(reg.storage.root).save(
        DeploymentSpec("fraud", "1", arms=(Arm("b", "2", 0.5),), salt="s"), why="test"
    )
    cfg = ServeConfig(redis_url, str(reg.storage.root), ["fraud"],
                      write_repo_file(tmp_path / "repo.py"))
    with TestClient(build_app(cfg)) as client:
        r = client.get("/v1/experiments/fraud")
        assert r.status_code == 200, r.text
        assert "b" in r.text
        assert client.get("/v1/experiments/nope").status_code == 404
