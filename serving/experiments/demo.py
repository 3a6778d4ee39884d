"""A live experiment end to end: champion + A/B arm + shadow on synthetic traffic, labels later.

Three LightGBM versions are trained on synthetic data with a known truth (v1 weak, v2 and v3
stronger) and registered; the deployment is champion v1, arm ``challenger`` = v2 on 30% of
users, shadow v3. Requests go through ``ExperimentRouter``, every prediction is logged to Kafka,
outcomes drawn from the true probability are produced to the outcome topic (half keyed by
request id, half by entity and time), the sink copies both topics to Parquet, and the report
is printed, ending on each challenger's anytime-valid decision (better / worse / keep
collecting) and the labels it took. ``tessera experiment demo`` runs it.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightgbm as lgb
import numpy as np

from features.kafka_admin import create_topics
from serving.experiments.kafka_log import KafkaRecordLog
from serving.experiments.records import (
    OUTCOME_SCHEMA,
    PREDICTION_SCHEMA,
    OutcomeRecord,
    now_us,
    outcome_normalizer,
)
from serving.experiments.report import build_report, dataset_dirs, format_report
from serving.experiments.router import ExperimentRouter
from serving.experiments.sink import ParquetSink, read_dataset
from serving.experiments.spec import Arm, DeploymentSpec, DeploymentStore

N_FEATURES = 8
MODEL = "demo_fraud"


def _truth(x: np.ndarray) -> np.ndarray:
    logit = 1.2 * x[:, 0] - 0.8 * x[:, 1] + 0.6 * x[:, 2] * x[:, 3] - 1.0
    return 1 / (1 + np.exp(-logit))


def _train(rows: int, rounds: int, seed: int) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N_FEATURES))
    y = (rng.random(rows) < _truth(x)).astype(int)
    params = {
        "objective": "binary",
        "verbose": -1,
        "num_threads": 1,
        "seed": seed,
        "num_leaves": 15,
        "min_data_in_leaf": 20,
    }
    return lgb.train(params, lgb.Dataset(x, y), num_boost_round=rounds)


def run_demo(
    home: Path, bootstrap: str, requests: int = 20_000, users: int = 5_000, rate: float = 2000.0
) -> str:
    """Run the whole loop under ``home`` (models/, offline/) and return the printed report."""
    from serving.registry import ModelRegistry
    from serving.scorer.models import ModelSet

    models_dir, offline_dir = home / "models", home / "offline"
    reg = ModelRegistry(models_dir)
    features = [f"f{i}" for i in range(N_FEATURES)]
    if not reg.versions(MODEL):
        for rows, rounds, seed in ((400, 8, 1), (20_000, 150, 2), (20_000, 150, 3)):
            booster = _train(rows, rounds, seed)
            reg.register(MODEL, booster.model_to_string(), {"features": features})
    v1, v2, v3 = reg.versions(MODEL)[:3]
    reg.set_alias(MODEL, "champion", v1, why="demo")
    store = DeploymentStore(models_dir)
    store.save(
        DeploymentSpec(MODEL, v1, arms=(Arm("challenger", v2, 0.3),), shadows=(v3,), salt="demo"),
        why="demo: champion v1, challenger arm v2 on 30%, shadow v3",
    )
    pred_topic, out_topic = f"{MODEL}-predictions", f"{MODEL}-outcomes"
    create_topics([pred_topic, out_topic], bootstrap)
    models = ModelSet(reg)
    log = KafkaRecordLog(bootstrap, pred_topic)
    outcomes = KafkaRecordLog(bootstrap, out_topic)
    router = ExperimentRouter(
        store,
        MODEL,
        models.predict_fn(MODEL),
        log=log.log,
        predict_one=lambda v, x: models.version(MODEL, v).predictor.predict_one(x),
    )
    rng = np.random.default_rng(7)
    xs = rng.normal(size=(requests, N_FEATURES))
    truth = _truth(xs)
    labels = rng.random(requests) < truth
    t0 = time.perf_counter()
    for i in range(requests):
        while time.perf_counter() - t0 < i / rate:  # paced, as live traffic would be
            time.sleep(0.0005)
        user = f"u{rng.integers(users)}"
        served = router.score(user, xs[i])
        if i % 2:  # by request id
            outcomes.log(
                OutcomeRecord(float(labels[i]), now_us(), request_id=served.request_id, model=MODEL)
            )
        else:  # by entity and time: the outcome observed a moment after the prediction
            outcomes.log(OutcomeRecord(float(labels[i]), now_us(), entity_key=user, model=MODEL))
    took = time.perf_counter() - t0
    router.close()
    log.close()
    outcomes.close()
    pred_dir, out_dir = dataset_dirs(offline_dir)
    for topic, folder, schema, norm in (
        (pred_topic, pred_dir, PREDICTION_SCHEMA, None),
        (out_topic, out_dir, OUTCOME_SCHEMA, outcome_normalizer()),
    ):
        sink = ParquetSink(bootstrap, topic, folder, schema, normalize=norm)
        sink.run(idle_s=2.0)
        sink.close()
    report = build_report(
        read_dataset(pred_dir, PREDICTION_SCHEMA),
        read_dataset(out_dir, OUTCOME_SCHEMA),
        store.current(MODEL),
        max_delay_s=3600,
        reps=200,
    )
    head = (
        f"{requests} requests in {took:.1f} s through the router; shadow jobs dropped: "
        f"{router.shadows.dropped}; log records dropped: {log.dropped}\n"
    )
    return head + format_report(report) + "\n\n" + decisions(report)


def decisions(report: dict) -> str:
    """The last word: each challenger's anytime-valid decision and the labels it took."""
    parts = []
    for who, m in [(f"arm {a['name']} v{a['version']}", a) for a in report["arms"]] + [
        (f"shadow v{s['version']}", s) for s in report["shadows"]
    ]:
        seq = m["vs_champion"]["sequential"]
        when = (
            f"at {seq['decided_at']} of {seq['labels']} labels"
            if seq["decided_at"] is not None
            else f"after {seq['labels']} labels"
        )
        parts.append(f"{who} {seq['decision']} ({seq['metric']}, {when})")
    return "anytime-valid decisions: " + "; ".join(parts)
