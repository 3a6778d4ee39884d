"""Drift injected into the online store, seen through the real serving path.

Redis rings (written as the stream worker writes them) -> ``Scorer`` -> ``ExperimentRouter``
logging feature vectors to the real broker -> ``ParquetSink`` -> the monitor with the
champion's reference from the registry. Not covered: the stream worker itself (the rings are
written directly with the worker's encoding).
"""

from __future__ import annotations

import numpy as np
import pytest

from features.kafka_admin import create_topics, delete_topics
from features.online.layout import entity_key
from features.online.read import OnlineStore
from serving.experiments.kafka_log import KafkaRecordLog
from serving.experiments.records import PREDICTION_SCHEMA
from serving.experiments.router import ExperimentRouter
from serving.experiments.sink import ParquetSink
from serving.experiments.spec import DeploymentSpec, DeploymentStore
from serving.monitoring.routes import run_monitor
from serving.monitoring.sources import PredictionLog, predictions_dir, registry_lookup
from serving.scorer.models import ModelSet
from serving.scorer.scorer import Scorer
from serving.scorer.synthetic import REPO, USER, ring_blobs, user_events, write_users
from tests.serving.scorer.world import make_world

pytestmark = pytest.mark.integration
N = 600


def write_big_spenders(client, n: int, now: int, seed: int) -> None:
    """Users ``u0..`` who buy as often as at training time, but five times more each time."""
    rng = np.random.default_rng(seed)
    risky = rng.random(n) < 0.2  # the same mix as write_users
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        events = [(t, 5.0 * a) for t, a in user_events(rng, now, bool(risky[i]))]
        pipe.hset(entity_key(USER, [f"u{i}"]), mapping=ring_blobs(events))
    pipe.execute()


@pytest.fixture
def topic(kafka_bootstrap, unique_name):
    create_topics([unique_name], kafka_bootstrap, partitions=2)
    yield unique_name
    delete_topics([unique_name], kafka_bootstrap)


def test_drift_in_live_features_is_alerted_from_the_prediction_log(
    redis_client, tmp_path, kafka_bootstrap, topic
):
    client, registry, now = make_world(redis_client, tmp_path)
    models_dir, offline = tmp_path / "models", tmp_path / "offline"
    store = DeploymentStore(models_dir)
    store.save(DeploymentSpec("fraud", "1"), why="first", who="test")
    models = ModelSet(registry)
    models.serve("fraud")
    scorer = Scorer(OnlineStore(client, REPO), models)
    log = KafkaRecordLog(kafka_bootstrap, topic)
    scorer.routers["fraud"] = ExperimentRouter(
        store, "fraud", models.predict_fn("fraud"), log=log, features="vector"
    )
    sink = ParquetSink(kafka_bootstrap, topic, predictions_dir(offline), PREDICTION_SCHEMA)
    lookup, read = registry_lookup(registry), PredictionLog(offline).read
    ents = [{"user_id": f"u{i}"} for i in range(N)]

    def serve_and_monitor() -> dict:
        for lo in range(0, N, 100):
            scorer.predict("fraud", ents[lo : lo + 100], at_us=now)
        assert sink.run(idle_s=1.5, stop_after=N) >= N
        return run_monitor("fraud", lookup, read, rows=N)

    try:
        write_users(client, N, now, seed=11)  # fresh users, same behaviour as in training
        before = serve_and_monitor()
        write_big_spenders(client, N, now, seed=12)
        after = serve_and_monitor()
    finally:
        log.close()
        sink.close()
        scorer.routers["fraud"].close()
        models.close()

    assert before["rows"] == N and before["status"] == "ok", before["alerts"]
    assert after["rows"] == N and after["status"] == "alert"
    drifted = {a["column"] for a in after["alerts"] if a["kind"] == "drift"}
    assert "txn_spend:amount_mean_24h" in drifted or "txn_spend:amount_mean_1h" in drifted
    assert not any(c.startswith("txn_counts:txn_count") for c in drifted)  # counts did not move
