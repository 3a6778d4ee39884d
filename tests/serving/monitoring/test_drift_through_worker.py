"""Drift injected into raw events on Kafka, seen through the stream worker and the serving path.

Transactions published with ``Publisher`` -> a real ``tessera worker`` subprocess computing the
windowed features into Redis -> ``Scorer`` -> ``ExperimentRouter`` logging feature vectors to the
real broker -> ``ParquetSink`` -> the monitor with the champion's reference from the registry.
Unlike ``test_live_drift.py``, no ring is written by the test: every feature value the model
sees was computed by the worker from the events.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from features.event_schema import us_to_iso
from features.online.layout import entity_key, offset_key
from features.online.read import OnlineStore
from serving.experiments.kafka_log import KafkaRecordLog
from serving.experiments.kafka_log import ensure_topics as ensure_log_topic
from serving.experiments.records import PREDICTION_SCHEMA
from serving.experiments.router import ExperimentRouter
from serving.experiments.sink import ParquetSink
from serving.experiments.spec import DeploymentSpec, DeploymentStore
from serving.monitoring.routes import run_monitor
from serving.monitoring.sources import PredictionLog, predictions_dir, registry_lookup
from serving.scorer import synthetic as syn
from serving.scorer.models import ModelSet
from serving.scorer.scorer import Scorer
from streams.producer import Publisher
from streams.topics import delete_topics, ensure_topics
from tests.reference import close
from tests.serving.scorer.world import make_world
from tests.streams.conftest import StreamEnv, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
N = 600

# The scorer's synthetic views (the model's inputs), rebuilt over a topic of our own.
REPO_TEMPLATE = '''
from features.definitions import Aggregate, EventSource, FeatureView
from serving.scorer import synthetic as syn

txn = EventSource(syn.TXN.name, syn.TXN.schema, syn.TXN.timestamp_field, syn.TXN.entity,
                  topic="{topic}", partitions=2)
txn_counts, txn_spend, txn_spread = (
    FeatureView(v.name, txn, [Aggregate(f.fn, [f.window], field=f.field, hop=f.hop, name=f.name)
                              for f in v.features])
    for v in syn.VIEWS
)
'''


def user_transactions(
    prefix: str, n: int, now: int, seed: int, scale: float
) -> dict[str, list[tuple[int, float]]]:
    """(ts µs, amount) events of users ``{prefix}0..`` drawn like the training users, amounts
    times ``scale`` (1.0 = no drift; the number and timing of purchases never change)."""
    rng = np.random.default_rng(seed)
    risky = rng.random(n) < 0.2  # the training mix
    return {
        f"{prefix}{i}": [(t, round(scale * a, 2)) for t, a in syn.user_events(rng, now, bool(r))]
        for i, r in enumerate(risky)
    }


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
    got = OnlineStore(client, repo).get_features(refs, [{"user_id": u} for u in sample], at=now)
    want = OnlineStore(client, syn.REPO).get_features(
        refs, [{"user_id": f"check-{u}"} for u in sample], at=now)
    for u, g, w in zip(sample, got.values, want.values, strict=True):
        assert all(close(a, b) for a, b in zip(g, w, strict=True)), (u, g, w)


def publish_and_wait(env: StreamEnv, client, events: list[dict]) -> None:
    """Send ``events`` and wait until the worker's Redis offset watermarks cover them all."""
    with Publisher(env.source, env.bootstrap) as pub:
        report = pub.publish(events)
    assert report.sent == len(events) and not report.rejected and not report.failed

    def applied() -> bool:
        for p, last in report.last_offsets.items():
            v = client.get(offset_key(env.group, env.source.topic, p))
            if v is None or int(v) < last:
                return False
        return True

    wait_for(applied, 60, "the worker to apply the published events", every=0.2)


@pytest.fixture
def worker_env(kafka_bootstrap, redis_url, redis_client, unique_name, tmp_path):
    repo_path = tmp_path / "repo.py"
    repo_path.write_text(REPO_TEMPLATE.format(topic=unique_name))
    env = StreamEnv(kafka_bootstrap, redis_url, tmp_path / "home", repo_path, f"g-{unique_name}")
    env.home.mkdir()
    ensure_topics([env.source], kafka_bootstrap)
    yield env
    env.stop_all()
    delete_topics([unique_name, f"{unique_name}.dlq", f"{unique_name}-pred"], kafka_bootstrap)


def test_drift_in_raw_events_is_alerted_after_the_worker_computes_the_features(
    redis_client, tmp_path, kafka_bootstrap, worker_env
):
    env = worker_env
    worker = env.start_worker(max_records=2000)  # joins its group while the model trains
    client, registry, _ = make_world(redis_client, tmp_path)
    pred_topic = f"{env.source.topic}-pred"
    ensure_log_topic(kafka_bootstrap, [pred_topic], partitions=2)
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
        users = user_transactions(prefix, N, now, seed, scale)
        publish_and_wait(env, client, [{"user_id": u, "amount": a, "ts": us_to_iso(t)}
                                       for u, evs in users.items() for t, a in evs])
        assert_worker_matches_synthetic_rings(client, env.repo, users, now)
        assert worker.poll() is None, "the worker died; see its log in TESSERA_HOME"
        ents = [{"user_id": f"{prefix}{i}"} for i in range(N)]
        for lo in range(0, N, 100):
            scorer.predict("fraud", ents[lo : lo + 100], at=now)
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
