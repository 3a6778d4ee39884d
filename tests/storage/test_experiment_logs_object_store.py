"""The prediction/outcome logs in a bucket on real S3- and GCS-protocol servers (moto,
fake-gcs-server): with ``TESSERA_OFFLINE_URI`` set, ``tessera experiment sink`` commits the
Kafka topics under ``<offline_uri>/experiments`` (nothing on the local disk), and every reader
finds them there: the experiment report (command and cached HTTP route), the monitor's
``PredictionLog``, the retrain spine, outcomes written without a broker, and ``forget``."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from features.kafka_admin import create_topics, delete_topics
from features.offline.storage import Store
from features.settings import Settings
from serving.experiments.records import OUTCOME_SCHEMA, PREDICTION_SCHEMA
from serving.experiments.report import build_report, dataset_dirs
from serving.experiments.routes import experiments_router
from serving.experiments.simulate import simulate_log
from serving.experiments.sink import read_dataset
from serving.experiments.spec import Arm, DeploymentSpec, DeploymentStore
from serving.forget import forget_entity
from serving.http.outcome_log import ParquetOutcomeLog
from serving.monitoring.sources import PredictionLog, predictions_dir
from serving.monitoring.spine import US_PER_DAY, outcome_spine
from serving.scorer.synthetic import REPO
from tessera import cli

pytestmark = pytest.mark.integration
START_US = 1_700_000_000_000_000
HELD_BACK = 300  # outcomes posted later, without a broker


@dataclass
class World:
    home: Path
    uri: str
    spec: DeploymentSpec
    preds: pl.DataFrame
    outcomes: pl.DataFrame  # every outcome, the held-back ones included
    sink_output: str


def _produce(bootstrap: str, topic: str, frame: pl.DataFrame) -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap)
    for chunk in frame.iter_slices(500):  # a message holds a JSON array of records
        p.send(topic, orjson.dumps(chunk.to_dicts()))
    p.flush()
    p.close()


def _report_counts(r: dict) -> dict:
    return {
        "champion": (r["champion"]["predictions"], r["champion"]["labelled"]),
        "arms": [(a["name"], a["predictions"], a["labelled"]) for a in r["arms"]],
        "shadows": [(s["version"], s["predictions"], s["labelled"],
                     s["vs_champion"]["paired_labelled"]) for s in r["shadows"]],
    }


@pytest.fixture(params=["s3", "gs"])
def world(request, kafka_bootstrap, unique_name, tmp_path, monkeypatch) -> World:
    _, bucket = request.getfixturevalue(f"{'gcs' if request.param == 'gs' else 's3'}_bucket")
    uri = f"{request.param}://{bucket}/{uuid.uuid4().hex[:8]}/offline"
    for k, v in {"TESSERA_HOME": str(tmp_path), "TESSERA_OFFLINE_URI": uri,
                 "KAFKA_BOOTSTRAP": kafka_bootstrap}.items():
        monkeypatch.setenv(k, v)
    spec = DeploymentStore(tmp_path / "models").save(
        DeploymentSpec("fraud", "1", arms=(Arm("challenger", "2", 0.3),), shadows=("3",),
                       salt="x"))
    preds, outcomes = simulate_log(spec, 3000, {"1": 1.5, "2": 0.5, "3": 0.8}, labelled=0.5,
                                   entities=400, seed=3, start_us=START_US)
    bare = pl.col("entity_key").str.replace("user_id=", "", literal=True)  # the scorer's key
    preds, outcomes = preds.with_columns(bare), outcomes.with_columns(bare)
    pred_topic, out_topic = f"{unique_name}-p", f"{unique_name}-o"
    create_topics([pred_topic, out_topic], kafka_bootstrap, partitions=2)
    try:
        _produce(kafka_bootstrap, pred_topic, preds)
        _produce(kafka_bootstrap, out_topic, outcomes.head(outcomes.height - HELD_BACK))
        cli._register()
        res = CliRunner().invoke(
            cli.app, ["experiment", "sink", "--predictions-topic", pred_topic,
                      "--outcomes-topic", out_topic, "--idle", "1"], catch_exceptions=False)
    finally:
        delete_topics([pred_topic, out_topic], kafka_bootstrap)
    assert res.exit_code == 0, res.output
    return World(tmp_path, uri, spec, preds, outcomes, res.output)


def test_the_sink_command_commits_into_the_bucket(world):
    settings = Settings.from_env()
    assert settings.offline_location == world.uri
    assert dataset_dirs(world.uri) == (f"{world.uri}/experiments/predictions",
                                       f"{world.uri}/experiments/outcomes")
    assert predictions_dir(world.uri) == dataset_dirs(world.uri)[0]
    assert f"-> {world.uri}/experiments/predictions" in world.sink_output
    store = Store(world.uri)
    for log in ("predictions", "outcomes"):
        names = [e.rel for e in store.list_files(f"experiments/{log}")]
        assert "_manifest.json" in names and any(n.endswith(".parquet") for n in names), names
    assert not (world.home / "offline").exists()  # the old code wrote there
    pred_dir, out_dir = dataset_dirs(settings.offline_location)
    assert read_dataset(pred_dir, PREDICTION_SCHEMA).height == world.preds.height
    assert read_dataset(out_dir, OUTCOME_SCHEMA).height == world.outcomes.height - HELD_BACK


def test_readers_find_the_logs_in_the_bucket(world):
    settings = Settings.from_env()
    sunk = world.outcomes.head(world.outcomes.height - HELD_BACK)
    want = build_report(world.preds, sunk, world.spec, reps=0)

    res = CliRunner().invoke(cli.app, ["experiment", "report", "fraud", "--reps", "0",
                                       "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert _report_counts(got) == _report_counts(want)
    assert got["champion"]["labelled"] > 0 and got["shadows"]
    assert got["champion"]["auc"] == pytest.approx(want["champion"]["auc"])

    logged = PredictionLog(settings.offline_location).read()
    assert sorted(logged["request_id"]) == sorted(world.preds["request_id"])

    # the route caches by the manifests' versions; labels posted without a broker (the
    # scorer's ParquetOutcomeLog) land in the bucket and make a fresh report
    router = experiments_router(settings.models_dir, settings.offline_location)
    app = FastAPI()
    app.include_router(router)
    http = TestClient(app)
    first = http.get("/v1/experiments/fraud", params={"reps": 0}).json()
    assert http.get("/v1/experiments/fraud", params={"reps": 0}).json() == first
    assert router.report_cache.builds == 1
    assert _report_counts(first) == _report_counts(want)
    ParquetOutcomeLog(dataset_dirs(settings.offline_location)[1]).write(
        world.outcomes.tail(HELD_BACK).to_dicts())
    more = http.get("/v1/experiments/fraud", params={"reps": 0}).json()
    assert router.report_cache.builds == 2
    everything = build_report(world.preds, world.outcomes, world.spec, reps=0)
    assert _report_counts(more) == _report_counts(everything) != _report_counts(first)

    spine = outcome_spine(settings.offline_location, "fraud", ("user_id",), days=30,
                          now_us=START_US + 2 * US_PER_DAY)
    expected = (
        world.preds.filter(pl.col("role") != "shadow")
        .join(world.outcomes.select("request_id", "label"), on="request_id")
        .select(pl.col("entity_key").alias("user_id"),
                pl.col("ts").cast(pl.Datetime("us", "UTC")), "label")
        .sort("ts", "user_id")
    )
    assert spine.height == world.outcomes.height
    assert spine.sort("ts", "user_id").equals(expected)


def test_forget_removes_the_entity_from_the_bucket(world):
    settings = Settings.from_env()
    labelled = world.outcomes["entity_key"].value_counts(sort=True)
    gone = labelled["entity_key"][0]
    n_preds = world.preds.filter(pl.col("entity_key") == gone).height
    n_outs = world.outcomes.head(world.outcomes.height - HELD_BACK).filter(
        pl.col("entity_key") == gone).height
    assert n_preds and n_outs
    report = forget_entity(settings, REPO, gone, who="test", why="erasure test")
    assert report["logged_rows"] == {"predictions": n_preds, "outcomes": n_outs}
    pred_dir, out_dir = dataset_dirs(settings.offline_location)
    preds = read_dataset(pred_dir, PREDICTION_SCHEMA)
    assert preds.height == world.preds.height - n_preds
    assert gone not in set(preds["entity_key"])
    assert gone not in set(read_dataset(out_dir, OUTCOME_SCHEMA)["entity_key"])
    store = Store(f"{world.uri}/experiments")
    objects = [e.rel for e in store.list_files() if e.rel.endswith(".parquet")]
    assert objects
    for rel in objects:  # every object, listed by a manifest or not
        df = pl.from_arrow(store.read_table(rel))
        assert df.filter(pl.col("entity_key") == gone).height == 0, rel
