"""Drift injected into raw events on Kafka, seen through the stream worker and the serving path.

Transactions published with ``Publisher`` -> a real ``tessera worker`` subprocess computing the
windowed features into Redis -> ``Scorer`` -> ``ExperimentRouter`` logging feature vectors to the
real broker -> ``ParquetSink`` -> the monitor with the champion's reference from the registry.
Unlike ``test_live_drift.py``, no ring is written by the test: every feature value the model
sees was computed by the worker from the events.
"""

from __future__ import annotations

import time

import pytest

from features.event_schema import us_to_iso
from features.kafka_admin import create_topics
from features.online.layout import entity_key
from features.online.read import OnlineStore
from serving.experiments.kafka_log import KafkaRecordLog
from serving.experiments.records import PREDICTION_SCHEMA
from serving.experiments.router import ExperimentRouter
from serving.experiments.sink import ParquetSink
from serving.experiments.spec import DeploymentSpec, DeploymentStore
from serving.monitoring.routes import run_monitor
from serving.monitoring.sources import PredictionLog, predictions_dir, registry_lookup
from serving.scorer import synthetic as syn
from serving.scorer.models import ModelSet
from serving.scorer.scorer import Scorer
from tests.reference import close
from tests.serving.monitoring.worker_world import publish_and_wait, user_transactions
from tests.serving.scorer.world import make_world

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
N = 600

def assert_worker_matches_synthetic_rings(client, repo, users: dict, now: int) -> None:
    """The worker's features for a few users equal the rings the synthetic writer (the scorer
    tests' stand-in for the worker) builds from the same events.

    The 7d features are included on purpose: the 7d window at ``now`` reaches back up to 12 h
    before ``now - 7d``, and the worker once dropped those events as late."""
    sample = list(users)[:20]
    refs = list(syn.FEATURES)
    pipe = client.pipeline(transaction=False)
    for u in sample:
        pipe.hset(entity_key(syn.USER, [f"check-{u}"]), mapping=syn.ring_blobs(users[u]))
    pipe.execute()
    got = OnlineStore(client, repo).get_features(refs, [{"user_id": u} for u in sample], at_us=now)
    want = OnlineStore(client, syn.REPO).get_features(
        refs, [{"user_id": f"check-{u}"} for u in sample], at_us=now)
    for u, g, w in zip(sample, got.values, want.values, strict=True):
        assert all(close(a, b) for a, b in zip(g, w, strict=True)), (u, g, w)


def test_drift_in_raw_events_is_alerted_after_the_worker_computes_the_features(
    redis_client, tmp_path, kafka_bootstrap, worker_env
):
    env = worker_env
    worker = env.start_worker(max_records=2000)  # joins its group while the model trains
    client, registry, _ = make_world(redis_client, tmp_path)
    pred_topic = f"{env.source.topic}-pred"
    create_topics([pred_topic], kafka_bootstrap, partitions=2)
    store = DeploymentStore(tmp_path / "models")
    store.save(DeploymentSpec("fraud", "1"), why="first", who="test")
    models = ModelSet(registry)
    models.serve("fraud")
    scorer = Scorer(OnlineStore(client, env.repo), models)  # the worker's views
    log = KafkaRecordLog(kafka_bootstrap, pred_topic)
    scorer.routers["fraud"] = ExperimentRouter(
        store, "fraud", models.predict_fn("fraud"), log=log, features="vector"
    )
    offline = tmp_path / "offline"
    sink = ParquetSink(kafka_bootstrap, pred_topic, predictions_dir(offline), PREDICTION_SCHEMA)
    lookup, read = registry_lookup(registry), PredictionLog(offline).read

    def phase(prefix: str, seed: int, scale: float) -> dict:
        now = time.time_ns() // 1000
        users, _ = user_transactions(prefix, N, now, seed, scale)
        publish_and_wait(env, client, [{"user_id": u, "amount": a, "ts": us_to_iso(t)}
                                       for u, evs in users.items() for t, a in evs])
        assert_worker_matches_synthetic_rings(client, env.repo, users, now)
        assert worker.poll() is None, "the worker died; see its log in TESSERA_HOME"
        ents = [{"user_id": f"{prefix}{i}"} for i in range(N)]
        for lo in range(0, N, 100):
            scorer.predict("fraud", ents[lo : lo + 100], at_us=now)
        assert sink.run(idle_s=1.5, stop_after=N) >= N
        return run_monitor("fraud", lookup, read, rows=N)

    try:
        before = phase("a", seed=21, scale=1.0)  # fresh users, behaving as in training
        after = phase("b", seed=22, scale=3.0)  # as many purchases, three times larger
    finally:
        log.close()
        sink.close()
        scorer.routers["fraud"].close()
        models.close()

    assert before["rows"] == N and before["status"] == "ok", before["alerts"]
    assert not before["alerts"]
    assert after["rows"] == N and after["status"] == "alert"
    drifted = {a["column"] for a in after["alerts"] if a["kind"] == "drift"}
    assert {"txn_spend:amount_mean_24h", "txn_spend:amount_mean_7d"} & drifted, drifted
    assert not any(c.startswith("txn_counts:txn_count") for c in drifted)  # counts did not move
