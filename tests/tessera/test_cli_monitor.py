import json

import polars as pl
import typer
from typer.testing import CliRunner

from serving.experiments.sink import import_frame
from serving.monitoring.reference import build_reference
from serving.monitoring.simulate import prediction_log, reference_columns
from serving.monitoring.sources import ReferenceFiles
from tessera import cli_monitor
from tests.serving.monitoring.webhook import capture_posts


def _app() -> typer.Typer:
    app = typer.Typer()
    cli_monitor.register(app)
    return app


def test_monitor_report_prints_alerts_and_exits_1_on_drift(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    cols = reference_columns(n=5000)
    score = cols.pop("score")
    ReferenceFiles(tmp_path / "models").save("fraud", "3", build_reference(cols, score))
    drifted = tmp_path / "drifted.parquet"
    prediction_log(1, 1000, shift=2.0).write_parquet(drifted)
    quiet = tmp_path / "quiet.parquet"
    prediction_log(2, 1000).write_parquet(quiet)

    runner = CliRunner()
    r = runner.invoke(_app(), ["monitor", "report", "fraud", "--predictions", str(drifted)])
    assert r.exit_code == 1, r.output
    assert "ALERT" in r.output and "drift" in r.output

    r = runner.invoke(_app(), ["monitor", "report", "fraud", "--predictions", str(quiet), "--json"])
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert body["status"] == "ok" and body["rows"] == 1000 and body["version"] == "3"


def test_monitor_report_without_reference_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    p = tmp_path / "p.parquet"
    pl.DataFrame({"ts": [1]}).write_parquet(p)
    r = CliRunner().invoke(_app(), ["monitor", "report", "nope", "--predictions", str(p)])
    assert r.exit_code != 0 and "no reference" in str(r.exception)


def test_monitor_ui_serves_the_dashboard_and_the_monitor_route(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TESSERA_HOME": str(tmp_path)}
    code = "from tessera.cli import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "monitor", "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/ui", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "tessera monitor ui did not start"
                time.sleep(0.2)
        assert r.status_code == 200 and "no data yet" in r.text
        r = httpx.get(f"http://127.0.0.1:{port}/v1/monitor/fraud", timeout=5)
        assert r.status_code == 404 and "no reference" in r.json()["detail"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_retrain_command_shadows_then_promotes_and_honours_the_policy(tmp_path, monkeypatch):
    from serving.experiments.spec import DeploymentStore
    from serving.registry import ModelRegistry
    from serving.registry.training import train
    from tests.serving.monitoring.test_retrain import training_set, write_log

    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    monkeypatch.setenv("LOGNAME", "erin")  # the OS user getpass reports
    models, offline = tmp_path / "models", tmp_path / "offline"
    registry = ModelRegistry(models)
    first = train(training_set(tmp_path / "old.parquet", 1), "label")
    registry.register("fraud", first.model_text, first.metadata())
    registry.set_alias("fraud", "champion", "1")
    fresh = training_set(tmp_path / "fresh.parquet", 2)
    policy = tmp_path / "policy.yaml"
    policy.write_text("every_hours: 24\n")
    args = ["retrain", "fraud", "--training-set", str(fresh), "--label", "label"]
    runner = CliRunner()

    r = runner.invoke(_app(), [*args, "--policy", str(policy)])
    assert r.exit_code == 0, r.output
    assert "retrain due: never retrained" in r.output and '"step": "shadow"' in r.output

    write_log(offline, DeploymentStore(models).current("fraud"), {"1": 1.5, "2": 0.5})
    r = runner.invoke(_app(), args)  # resumes the open run
    assert r.exit_code == 0, r.output
    assert '"step": "promoted"' in r.output
    assert registry.resolve("fraud", "champion") == "2"

    r = runner.invoke(_app(), [*args, "--policy", str(policy)])  # ran minutes ago: not due
    assert r.exit_code == 0 and "no retrain due" in r.output
    assert registry.versions("fraud") == ["1", "2"]
    # every audit record of the loop names the OS user who ran it (serving.auth.actor)
    assert {e["who"] for e in DeploymentStore(models).audit_log("fraud")} == {"os:erin"}
    assert {e["who"] for e in registry.audit("fraud")} == {"os:erin"}


def test_monitor_watch_posts_an_alert_to_the_webhook_by_itself(tmp_path):
    import os
    import sys

    from serving.monitoring.sources import predictions_dir

    cols = reference_columns(n=5000)
    score = cols.pop("score")
    ReferenceFiles(tmp_path / "models").save("fraud", "3", build_reference(cols, score))
    import_frame(predictions_dir(tmp_path / "offline"), prediction_log(1, 1000, shift=2.0))
    env = {**os.environ, "TESSERA_HOME": str(tmp_path)}
    cmd = [
        sys.executable,
        "-c",
        "from tessera.cli import main; main()",
        "monitor",
        "watch",
        "fraud",
        "--every",
        "0.2",
    ]
    with capture_posts() as (url, received):
        _watch(cmd + ["--webhook", url], env, received)
    assert len(received) == 1
    kinds = {(a["column"], a["kind"]) for a in received[0]["alerts"]}
    assert ("amount", "drift") in kinds


def _watch(cmd, env, received) -> None:
    import subprocess
    import time

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not received and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.1)
        time.sleep(0.6)  # a few more rounds: still one POST (alerts fire on change only)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_retrain_policy_counts_new_labels_from_the_outcome_log(tmp_path, monkeypatch):
    from serving.experiments.spec import DeploymentSpec
    from serving.registry import ModelRegistry
    from serving.registry.training import train
    from tests.serving.monitoring.test_retrain import training_set, write_log

    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    registry = ModelRegistry(tmp_path / "models")
    first = train(training_set(tmp_path / "old.parquet", 1), "label")
    registry.register("fraud", first.model_text, first.metadata())
    registry.set_alias("fraud", "champion", "1")
    write_log(tmp_path / "offline", DeploymentSpec("fraud", "1"), {"1": 1.0})  # 10k labels
    fresh = training_set(tmp_path / "fresh.parquet", 2)
    args = ["retrain", "fraud", "--training-set", str(fresh), "--label", "label", "--policy"]
    policy = tmp_path / "policy.yaml"
    policy.write_text("after_labels: 20000\n")
    r = CliRunner().invoke(_app(), [*args, str(policy)])
    assert r.exit_code == 0 and "no retrain due" in r.output, r.output
    policy.write_text("after_labels: 5000\n")
    r = CliRunner().invoke(_app(), [*args, str(policy)])
    assert r.exit_code == 0, r.output
    assert "new labels since the last retrain" in r.output and '"step": "shadow"' in r.output
