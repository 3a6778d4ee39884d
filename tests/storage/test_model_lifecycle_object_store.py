"""A model's whole lifecycle with ``TESSERA_MODELS_URI`` at a bucket on real S3- and
GCS-protocol servers (moto, fake-gcs-server): ``tessera train`` registers there, and every later
command finds it there too: ``deploy``, ``experiment report``, ``promote``, ``rollback``,
``models alias``, ``monitor report`` (the reference from the registry's metadata), ``features``'
model users, the dashboard and the scorer's ``/v1/experiments`` route. Nothing is written under
``<home>/models``: before, everything after ``train`` looked on the local disk and found no
model. Reference files are saved and read in the bucket, and ``tessera retrain`` keeps its run's
state there: a second call resumes the run (no second version) from the bucket."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from features.offline.storage import Store
from features.settings import Settings
from serving.experiments.records import PREDICTION_SCHEMA
from serving.experiments.report import dataset_dirs
from serving.experiments.simulate import simulate_log
from serving.experiments.sink import import_frame
from serving.experiments.spec import DeploymentStore
from serving.registry import ModelRegistry
from tessera import cli
from tests.serving.registry.helpers import write_training_set

pytestmark = pytest.mark.integration


@pytest.fixture(params=["s3", "gs"])
def home(request, tmp_path, monkeypatch) -> tuple[Path, str]:
    _, bucket = request.getfixturevalue(f"{'gcs' if request.param == 'gs' else 's3'}_bucket")
    uri = f"{request.param}://{bucket}/{uuid.uuid4().hex[:8]}/models"
    home = tmp_path / "home"
    monkeypatch.setenv("TESSERA_HOME", str(home))
    monkeypatch.setenv("TESSERA_MODELS_URI", uri)
    monkeypatch.delenv("TESSERA_OFFLINE_URI", raising=False)
    monkeypatch.setenv("LOGNAME", "tester")  # the OS user getpass reports
    cli._register()
    return home, uri


def _run(*args: str, codes: tuple[int, ...] = (0,)) -> str:
    res = CliRunner().invoke(cli.app, list(args), catch_exceptions=False)
    assert res.exit_code in codes, res.output
    return res.stdout


def _train(tmp: Path, seed: int) -> str:
    data = tmp / f"train-{seed}.parquet"
    write_training_set(data, n=2000, seed=seed)
    params = tmp / "params.json"
    params.write_text(json.dumps({"num_iterations": 30, "num_leaves": 7}))
    return _run("train", "--training-set", str(data), "--label", "is_fraud", "--model",
                "fraud", "--params", str(params), "--seed", str(seed), "--no-progress")


def _champion_predictions(path: Path, registry: ModelRegistry, n: int = 600) -> None:
    """Logged champion predictions whose vectors look like the training set (no drift)."""
    mv = registry.get("fraud", "champion")
    rng = np.random.default_rng(7)
    vectors = np.column_stack([rng.normal(size=n), rng.exponential(size=n), rng.normal(size=n)])
    rows = {
        "request_id": [f"r{i}" for i in range(n)],
        "ts": (1_700_000_000_000_000 + np.arange(n, dtype=np.int64) * 1000).tolist(),
        "entity_key": [f"user_id=u{i % 97}" for i in range(n)],
        "model": ["fraud"] * n, "version": [mv.version] * n, "role": ["champion"] * n,
        "arm": ["champion"] * n, "score": rng.random(n).tolist(), "latency_ms": [1.0] * n,
        "error": [None] * n, "features_hash": [""] * n,
        "features": [[float(v) for v in row[: len(mv.features)]] for row in vectors],
    }
    pl.from_arrow(pa.Table.from_pydict(rows, schema=PREDICTION_SCHEMA)).write_parquet(path)


def test_train_deploy_report_promote_rollback_monitor_in_a_bucket(home, tmp_path):
    home_dir, uri = home
    settings = Settings.from_env()
    assert settings.models_location == uri
    assert "registered fraud v1" in _train(tmp_path, 1)
    assert "registered fraud v2" in _train(tmp_path, 2)

    spec = json.loads(_run("deploy", "fraud", "--champion", "1", "--shadow", "2", "-m", "go"))
    assert (spec["champion"], spec["shadows"], spec["revision"]) == ("1", ["2"], 1)
    registry = ModelRegistry(uri)
    assert registry.aliases("fraud") == {"champion": "1"}

    # logged traffic (local offline log): the report reads the spec from the bucket
    store = DeploymentStore(uri)
    preds, outcomes = simulate_log(store.current("fraud"), 4000, {"1": 1.5, "2": 0.5},
                                   labelled=0.5, seed=3)
    for frame, folder in zip((preds, outcomes), dataset_dirs(settings.offline_location),
                             strict=True):
        import_frame(folder, frame)
    report = json.loads(_run("experiment", "report", "fraud", "--reps", "0", "--json"))
    assert report["champion"]["version"] == "1" and report["champion"]["labelled"] > 0
    assert [s["version"] for s in report["shadows"]] == ["2"]

    assert json.loads(_run("promote", "fraud", "--from", "2", "-m", "better"))["champion"] == "2"
    assert registry.aliases("fraud") == {"champion": "2"}
    assert json.loads(_run("rollback", "fraud", "-m", "bad night"))["champion"] == "1"
    assert registry.aliases("fraud") == {"champion": "1"}
    assert "challenger: None -> 2" in _run("models", "alias", "fraud", "challenger", "2",
                                            "--why", "try it")
    assert registry.aliases("fraud") == {"champion": "1", "challenger": "2"}
    history = _run("experiment", "history", "fraud")
    assert "bad night" in history and "alias champion -> v2" in history

    # the monitor's reference is the champion's, from the registry's metadata in the bucket
    logged = tmp_path / "preds.parquet"
    _champion_predictions(logged, registry)
    body = json.loads(_run("monitor", "report", "fraud", "--predictions", str(logged),
                           "--json", codes=(0, 1)))  # 1: alerts (made-up vectors may drift)
    assert body["version"] == "1" and body["rows"] == 600 and body["columns"], body

    from tessera.cli_features import _users

    users = _users(settings, None)
    assert {u["model"] for view in users.values() for u in view} == {"fraud"}, users

    from serving.dashboard.sources import from_settings

    snap = from_settings(settings, registry=registry, cache_s=0).snapshot()
    assert [r["model"] for r in snap["experiments"]["rows"]] == ["fraud"], snap["experiments"]
    assert [r["model"] for r in snap["monitors"]["rows"]] == ["fraud"], snap["monitors"]

    # the state is in the bucket, nothing on the local disk
    assert not (home_dir / "models").exists()
    bucket = Store(uri)
    assert bucket.list_dir("fraud/deployments") == ["0001.json", "0002.json", "0003.json",
                                                    "audit.jsonl"]
    assert bucket.list_dir("fraud/versions") == ["1", "2"]
    assert [e["why"] for e in registry.audit("fraud")][-1] == "try it"


def test_reference_files_round_trip_in_a_bucket(home):
    from serving.monitoring.reference import build_reference
    from serving.monitoring.simulate import reference_columns
    from serving.monitoring.sources import ReferenceFiles

    home_dir, uri = home
    cols = reference_columns(n=2000)
    score = cols.pop("score")
    ReferenceFiles(uri).save("other", "7", build_reference(cols, score))
    assert Store(uri).exists("other/reference.json")  # the old code wrote to ./s3:/...
    again = ReferenceFiles(Settings.from_env().models_location)
    assert again("other").version == "7" and again.names() == ["other"]
    assert not (home_dir / "models").exists()


def test_a_retrain_run_resumes_from_its_state_in_the_bucket(home, tmp_path):
    home_dir, uri = home
    _train(tmp_path, 1)
    _run("models", "alias", "fraud", "champion", "1", "--why", "first")
    fresh = tmp_path / "fresh.parquet"
    write_training_set(fresh, n=2000, seed=5, fingerprint="fresh-fp")
    args = ("retrain", "fraud", "--training-set", str(fresh), "--label", "is_fraud")
    first = json.loads(_run(*args))
    assert (first["step"], first["version"], first["parent"]) == ("shadow", "2", "1")
    bucket = Store(uri)
    assert bucket.list_dir("fraud/retrain") == [f"{first['run']}.json"]
    assert json.loads(bucket.read_bytes(f"fraud/retrain/{first['run']}.json"))["step"] == "shadow"
    assert DeploymentStore(uri).current("fraud").shadows == ("2",)

    again = json.loads(_run(*args))  # the same run, resumed from the bucket: no version 3
    assert again["run"] == first["run"] and again["step"] == "shadow"
    registry = ModelRegistry(uri)
    assert registry.versions("fraud") == ["1", "2"]
    assert registry.metadata("fraud", "2")["retrain_run"] == first["run"]
    # training sets retrain builds are local Parquet files for LightGBM, outside <home>/models
    from serving.monitoring.retrain import training_set_dir

    assert training_set_dir(Settings.from_env(), "fraud") == home_dir / "retrain" / "fraud"
    assert not (home_dir / "models").exists()


def test_the_served_app_reads_specs_from_the_bucket(home, tmp_path, redis_client, redis_url,
                                                    monkeypatch):
    from starlette.testclient import TestClient

    from serving.experiments.spec import Arm, DeploymentSpec
    from serving.http.main import ServeConfig, build_app
    from serving.scorer.synthetic import write_repo_file
    from tests.serving.scorer.world import make_world

    home_dir, uri = home
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    trained = tmp_path / "trained"
    trained.mkdir()
    _, local, _ = make_world(redis_client, trained)  # then copied into the bucket
    registry = ModelRegistry(uri)
    for v in local.versions("fraud"):
        registry.register("fraud", local.get("fraud", v).model_text, local.metadata("fraud", v))
    registry.set_alias("fraud", "champion", "1", who="test", why="first", gate=False)
    DeploymentStore(uri).save(DeploymentSpec("fraud", "1", arms=(Arm("b", "2", 0.5),), salt="s"),
                              why="test")
    cfg = ServeConfig(redis_url, uri, ["fraud"], write_repo_file(tmp_path / "repo.py"))
    with TestClient(build_app(cfg)) as client:
        r = client.get("/v1/experiments/fraud")
        assert r.status_code == 200, r.text
        body = r.json()  # no traffic logged yet: the spec's champion and revision
        assert (body["model"], body["revision"], body["champion"]["version"]) == ("fraud", 1, "1")
        assert client.get("/v1/experiments/nope").status_code == 404
    assert not (home_dir / "models").exists()
