"""``GET /v1/experiments/{name}`` through the scorer app: ``reps`` (bootstrap resamples),
``alpha`` and ``max_delay_s`` are bounded; beyond them a 400 in the error schema, before any
work (issue 16: 4 x 30k reps kept both cores busy 78 s)."""

import time

import httpx
import pytest

from features.online.read import OnlineStore
from serving.experiments.report import dataset_dirs
from serving.experiments.routes import MAX_REPS, experiments_router
from serving.experiments.simulate import simulate_log
from serving.experiments.sink import import_frame
from serving.experiments.spec import Arm, DeploymentSpec, DeploymentStore
from serving.http.app import create_app, fast_app
from serving.scorer.models import ModelSet
from serving.scorer.scorer import Scorer
from serving.scorer.synthetic import REPO
from tests.serving.http.conftest import running
from tests.serving.scorer.world import make_world

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def url(redis_url, tmp_path_factory):
    import redis

    rc = redis.Redis.from_url(redis_url)
    rc.flushdb()
    tmp_path = tmp_path_factory.mktemp("experiment_bounds")
    client, reg, _ = make_world(rc, tmp_path)
    spec = DeploymentStore(tmp_path / "models").save(
        DeploymentSpec("fraud", "1", arms=(Arm("challenger", "2", 0.3),), salt="x")
    )
    preds, outcomes = simulate_log(spec, 20_000, {"1": 1.5, "2": 0.5}, labelled=0.5)
    for frame, folder in zip((preds, outcomes), dataset_dirs(tmp_path / "offline"), strict=True):
        import_frame(folder, frame)
    models = ModelSet(reg)
    models.serve("fraud")
    scorer = Scorer(OnlineStore(client, REPO), models)
    app = create_app(scorer, routers=[experiments_router(tmp_path / "models",
                                                         tmp_path / "offline")])
    with running(fast_app(app)) as u:
        yield u


@pytest.mark.parametrize("params,field", [
    ({"reps": MAX_REPS + 1}, "reps"), ({"reps": 30_000}, "reps"), ({"reps": -1}, "reps"),
    ({"alpha": 0}, "alpha"), ({"alpha": 1.5}, "alpha"), ({"alpha": "nan"}, "alpha"),
    ({"max_delay_s": -1}, "max_delay_s"), ({"max_delay_s": "inf"}, "max_delay_s"),
])
def test_out_of_range_parameters_are_400_at_once(url, params, field):
    t0 = time.monotonic()
    r = httpx.get(f"{url}/v1/experiments/fraud", params=params, timeout=30)
    assert time.monotonic() - t0 < 1.0
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "invalid_field" and body["field"] == field


def test_the_maximum_is_allowed_and_bounded_in_time(url):
    t0 = time.monotonic()
    r = httpx.get(f"{url}/v1/experiments/fraud", params={"reps": MAX_REPS}, timeout=60)
    took = time.monotonic() - t0
    print(f"reps={MAX_REPS}: {took:.2f} s")
    assert r.status_code == 200
    assert r.json()["arms"][0]["vs_champion"]["verdict"]["word"] == "better"
    assert took < 20
    assert httpx.get(f"{url}/v1/experiments/fraud", params={"reps": 0}).status_code == 200
