"""The scorer hook that makes experiment routers log feature vectors for the monitor."""

from types import SimpleNamespace

import numpy as np

from serving.experiments.router import ExperimentRouter
from serving.experiments.spec import DeploymentSpec, DeploymentStore
from serving.monitoring.hook import log_vectors


def test_log_vectors_switches_routers_from_hashes_to_vectors(tmp_path):
    store = DeploymentStore(tmp_path)
    store.save(DeploymentSpec("m", "1"), why="test")
    logged = []
    router = ExperimentRouter(store, "m", lambda v, x: np.zeros(len(x)), log=logged.append)
    try:
        router.score("u1", np.array([1.0, 2.0]))
        log_vectors(SimpleNamespace(routers={"m": router}))
        router.score("u2", np.array([3.0, 4.0]))
    finally:
        router.close()
    assert logged[0].features is None and logged[0].features_hash
    assert logged[1].features == [3.0, 4.0]
