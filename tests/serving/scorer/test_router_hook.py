"""The experiments hook: an ExperimentRouter plugged into Scorer.routers picks the arm per
entity, scores with that version through the scorer's predict_fn and logs every prediction."""

import threading

import numpy as np
import pytest

from features.online.read import OnlineStore
from serving.experiments.router import ExperimentRouter
from serving.experiments.spec import Arm, DeploymentSpec, DeploymentStore
from serving.scorer.models import ModelSet
from serving.scorer.scorer import Scorer
from serving.scorer.synthetic import REPO

pytestmark = pytest.mark.integration


def test_experiment_router_scores_arms_and_shadows(world, tmp_path):
    client, reg, now = world
    models = ModelSet(reg)
    m = models.serve("fraud")
    scorer = Scorer(OnlineStore(client, REPO), models)
    store = DeploymentStore(tmp_path / "deploy")
    store.save(DeploymentSpec("fraud", "1", arms=(Arm("b", "2", 0.5),), shadows=("2",),
                              salt="s"), why="test")
    logged = []
    lock = threading.Lock()

    def log(rec):
        with lock:
            logged.append(rec)

    router = ExperimentRouter(store, "fraud", models.predict_fn("fraud"), log=log)
    scorer.routers["fraud"] = router
    try:
        ents = [{"user_id": f"u{i}"} for i in range(60)]
        out = scorer.predict("fraud", ents, at_us=now)["predictions"]
        res = OnlineStore(client, REPO).get_features(list(m.features), ents, at_us=now)
        x = np.array([[np.nan if v is None else v for v in row] for row in res.values])
        boosters = {v: reg.get("fraud", v).booster() for v in ("1", "2")}
        versions = {p["version"] for p in out}
        assert versions == {"1", "2"}
        for i, p in enumerate(out):
            assert abs(p["score"] - boosters[p["version"]].predict(x[i:i + 1])[0]) <= 1e-9
            assert p["arm"] in ("champion", "b")
        roles = [getattr(r, "role", None) for r in logged]
        assert roles.count("champion") + roles.count("arm") == 60
    finally:
        router.close()
