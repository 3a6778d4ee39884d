"""`tessera retrain NAME` with no spine: the training set comes from the outcome log.

Raw transactions on Kafka -> a real ``tessera worker`` (Redis tiles + the offline event log) ->
``Scorer`` + ``ExperimentRouter`` logging to a prediction topic -> outcomes (by entity and time)
on an outcome topic -> ``ParquetSink`` for both -> ``tessera retrain fraud``. The training set it
builds must hold one row per labelled prediction, at the prediction's time, with the label the
outcome carried, and features recomputed offline that equal the vector the scorer logged.
"""

from __future__ import annotations

import json
import time

import numpy as np
import polars as pl
import pytest

from features.event_schema import us_to_iso
from features.kafka_admin import create_topics
from features.offline.training_set import read_fingerprint
from features.online.read import OnlineStore
from features.registry import apply
from features.settings import Settings
from serving.experiments.kafka_log import KafkaRecordLog
from serving.experiments.records import (
    OUTCOME_SCHEMA,
    PREDICTION_SCHEMA,
    OutcomeRecord,
    now_us,
    outcome_normalizer,
)
from serving.experiments.report import dataset_dirs
from serving.experiments.router import ExperimentRouter
from serving.experiments.sink import ParquetSink, read_dataset
from serving.experiments.spec import DeploymentSpec, DeploymentStore
from serving.scorer import synthetic as syn
from serving.scorer.models import ModelSet
from serving.scorer.scorer import Scorer
from tests.reference import close
from tests.serving.monitoring.worker_world import publish_and_wait, user_transactions
from tests.serving.scorer.world import make_world

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
N = 300


def _sink_all(bootstrap: str, topic: str, folder, schema, want: int, normalize=None) -> None:
    sink = ParquetSink(bootstrap, topic, folder, schema, normalize=normalize)
    try:
        got = sink.run(idle_s=3.0, stop_after=want)
        assert got >= want, f"{topic}: {got} of {want} records"
    finally:
        sink.close()


def test_retrain_without_a_spine_trains_on_the_labelled_predictions(
    redis_client, kafka_bootstrap, worker_env, monkeypatch
):
    env = worker_env
    worker = env.start_worker(max_records=2000)  # joins its group while the model trains
    client, registry, _ = make_world(redis_client, env.home)  # fraud v1 (champion), v2
    settings = Settings(env.home)
    apply(env.repo, settings)  # the retrain reads the applied definitions
    pred_topic, out_topic = f"{env.source.topic}-pred", f"{env.source.topic}-out"
    create_topics([pred_topic, out_topic], kafka_bootstrap, partitions=2)
    DeploymentStore(settings.models_dir).save(DeploymentSpec("fraud", "1"), why="t", who="test")

    now = time.time_ns() // 1000
    users, risky = user_transactions("r", N, now, seed=31, scale=1.0)
    events = [{"user_id": u, "amount": a, "ts": us_to_iso(t)}
              for u, evs in users.items() for t, a in evs]
    publish_and_wait(env, client, events, offline=True)
    assert worker.poll() is None, "the worker died; see its log in TESSERA_HOME"

    models = ModelSet(registry)
    models.serve("fraud")
    scorer = Scorer(OnlineStore(client, env.repo), models)
    log, outcomes = KafkaRecordLog(kafka_bootstrap, pred_topic), KafkaRecordLog(kafka_bootstrap,
                                                                               out_topic)
    scorer.routers["fraud"] = ExperimentRouter(
        DeploymentStore(settings.models_dir), "fraud", models.predict_fn("fraud"), log=log,
        features="vector",
    )
    rng = np.random.default_rng(5)
    labelled = {}
    try:
        names = list(users)
        for lo in range(0, N, 50):
            scorer.predict("fraud", [{"user_id": u} for u in names[lo : lo + 50]])
        time.sleep(0.01)  # outcomes are observed after the predictions they answer
        for i, u in enumerate(names):
            if rng.random() < 0.7:  # not every prediction gets a label
                labelled[u] = float(risky[i])
                outcomes.log(OutcomeRecord(labelled[u], now_us(), entity_key=u, model="fraud"))
    finally:
        log.close()
        outcomes.close()
        scorer.routers["fraud"].close()
        models.close()
    pred_dir, out_dir = dataset_dirs(settings.offline_dir)
    _sink_all(kafka_bootstrap, pred_topic, pred_dir, PREDICTION_SCHEMA, N)
    _sink_all(kafka_bootstrap, out_topic, out_dir, OUTCOME_SCHEMA, len(labelled),
              outcome_normalizer())

    import typer
    from typer.testing import CliRunner

    from tessera import cli_monitor

    monkeypatch.setenv("TESSERA_HOME", str(env.home))
    # what is tested is the training set's rows, not the model: its ~40-row holdout is allowed
    monkeypatch.setenv("TESSERA_MIN_HOLDOUT_ROWS", "20")
    app = typer.Typer()
    cli_monitor.register(app)
    r = CliRunner().invoke(app, ["retrain", "fraud"])  # no spine, no training set, no label
    assert r.exit_code == 0, r.output
    state = json.loads(r.output)
    assert state["step"] == "shadow" and state["parent"] == "1"
    meta = registry.metadata("fraud", state["version"])
    built = list((settings.models_dir / "fraud" / "retrain").glob("training-*.parquet"))
    assert len(built) == 1
    assert meta["training_set"]["fingerprint"] == read_fingerprint(built[0])
    assert meta["features"] == registry.metadata("fraud", "1")["features"]
    assert DeploymentStore(settings.models_dir).current("fraud").shadows == (state["version"],)

    # one row per labelled prediction, at the prediction's time, with the outcome's label ...
    train = pl.read_parquet(built[0]).sort("user_id")
    preds = read_dataset(pred_dir, PREDICTION_SCHEMA).sort("entity_key")
    assert train["user_id"].to_list() == sorted(labelled)
    assert train["label"].to_list() == [labelled[u] for u in sorted(labelled)]
    served = preds.filter(pl.col("entity_key").is_in(list(labelled)))
    ts_us = train["ts"].dt.epoch("us").to_list()
    assert ts_us == served["ts"].to_list()
    # ... and the offline store's features as of that time are what the scorer was given
    cols = [f.replace(":", "__") for f in syn.FEATURES]
    offline = train.select(cols).rows()
    assert sum(v is not None for row in offline for v in row) > 0.6 * len(offline) * len(cols)
    for u, got, want in zip(train["user_id"], offline, served["features"].to_list(), strict=True):
        assert all(close(a, b) for a, b in zip(got, want, strict=True)), (u, got, want)

    # the same command again resumes that run: no second version
    again = CliRunner().invoke(app, ["retrain", "fraud"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["run"] == state["run"]
    assert registry.versions("fraud")[-1] == state["version"]
