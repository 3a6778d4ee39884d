"""``tessera train`` and ``tessera models``: train, register, alias with audit, show."""

import json

import pytest
import typer
from typer.testing import CliRunner

from serving.registry import ModelRegistry
from serving.scorer.synthetic import write_repo_file
from tessera import cli_serving
from tests.serving.http.conftest import wait_until_up
from tests.serving.registry.helpers import write_training_set


def _app() -> typer.Typer:
    app = typer.Typer()
    cli_serving.register(app)
    return app


def test_train_list_show_alias(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    monkeypatch.setenv("LOGNAME", "carol")  # the OS user getpass reports
    data = tmp_path / "train.parquet"
    write_training_set(data, n=2000)
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"num_iterations": 20, "num_leaves": 7}))
    repo = tmp_path / "repo.py"
    write_repo_file(repo)
    run = CliRunner().invoke
    args = ["train", "--training-set", str(data), "--label", "is_fraud", "--model", "fraud",
            "--params", str(params), "--seed", "3", "--repo", str(repo)]
    r = run(_app(), ["models", "list"])
    assert r.exit_code == 0 and "no models in" in r.output and "tessera train" in r.output
    r = run(_app(), args)
    assert r.exit_code == 0, r.output
    assert "registered fraud v1: AUC 0." in r.output and "gates passed" in r.output
    assert "iteration 10/20: holdout AUC 0." in r.output  # progress
    assert run(_app(), [*args, "--alias", "challenger"]).exit_code == 0
    r = run(_app(), ["models", "alias", "fraud", "champion", "1", "--why", "first deploy"])
    assert r.exit_code == 0 and "champion: None -> 1" in r.output
    r = run(_app(), ["models", "list"])
    assert "fraud: versions 1, 2; challenger=2, champion=1" in r.output
    r = run(_app(), ["models", "show", "fraud", "champion", "--json"])
    meta = json.loads(r.output)
    assert meta["version"] == "1" and meta["aliases"] == ["champion"]
    assert meta["training_set"]["fingerprint"] == "fp123" and meta["seed"] == 3
    assert set(meta["feature_views"]) == {"txn_counts", "txn_spend", "txn_spread"}
    assert "reference" not in meta and meta["params"]["num_iterations"] == 20
    r = run(_app(), ["models", "show", "fraud", "--audit"])
    log = [json.loads(line) for line in r.output.splitlines()]
    assert [(e["alias"], e["before"], e["after"], e["who"]) for e in log[:2]] == [
        ("challenger", None, "2", "os:carol"), ("champion", None, "1", "os:carol")
    ]
    same = ModelRegistry(tmp_path / "models")
    assert same.get("fraud", "1").model_text == same.get("fraud", "2").model_text


@pytest.mark.integration
def test_serve_two_workers_default_models(tmp_path, redis_client, redis_url):
    """`tessera serve` as a real process: finds the champion, answers, sums metrics."""
    import os
    import signal
    import subprocess
    import sys

    import httpx

    from tessera.local import free_port
    from tests.serving.scorer.world import make_world

    _, reg, now = make_world(redis_client, tmp_path)
    repo = tmp_path / "repo.py"
    write_repo_file(repo)
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "TESSERA_HOME": str(tmp_path),
           "TESSERA_REPO": str(repo)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from tessera.cli import main; main()", "serve",
         "--port", str(port), "--workers", "2"],
        env=env, start_new_session=True, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/readyz", proc)
        with httpx.Client(base_url=base) as c:
            for i in range(20):
                r = c.post("/v1/predict/fraud", json={"entities": [{"user_id": f"u{i}"}],
                                                       "at": now // 1000 + 1})  # epoch ms
                assert r.status_code == 200 and r.json()["version"] == "1"
            text = c.get("/metrics").text
        line = next(x for x in text.splitlines()
                    if x.startswith("tessera_predictions_total{") and 'version="1"' in x)
        assert float(line.split()[-1]) == 20.0  # both workers' counts, summed
        assert 'pid="' not in text  # one series per metric, not one per worker process
        http = next(x for x in text.splitlines() if x.startswith("tessera_http_requests_total{")
                    and 'route="/v1/predict/{model}"' in x and 'status="200"' in x)
        assert float(http.split()[-1]) == 20.0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_refusals_gates_override_and_model_card(tmp_path, monkeypatch):
    from tests.serving.registry.helpers import write_segmented_set

    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    monkeypatch.setenv("LOGNAME", "dana")
    run = CliRunner().invoke
    good, noise = tmp_path / "good.parquet", tmp_path / "noise.parquet"
    write_segmented_set(good, n=1500, noisy="none")
    write_segmented_set(noise, n=1500, seed=1, shuffle_all=True)
    params = tmp_path / "p.json"
    base = ["train", "--label", "label", "--model", "fraud", "--params", str(params),
            "--no-progress"]
    params.write_text(json.dumps({"num_leafs": 7}))
    r = run(_app(), [*base, "--training-set", str(good)])
    assert r.exit_code != 0 and "unknown LightGBM parameter 'num_leafs'" in str(r.exception)
    params.write_text(json.dumps({"num_iterations": 20, "num_leaves": 7}))
    r = run(_app(), [*base, "--training-set", str(good), "--min-holdout-rows", "400"])
    assert "the holdout has 300 rows" in str(r.exception)
    r = run(_app(), [*base, "--training-set", str(good), "--segment", "country",
                     "--alias", "champion"])
    assert r.exit_code == 0 and "gates passed" in r.output, r.output
    # a noise model is registered (gates FAILED in its card) but not made champion
    r = run(_app(), [*base, "--training-set", str(noise), "--alias", "champion"])
    assert "registered fraud v2" in r.output and "gates FAILED (min_auc" in r.output
    assert "fraud v2 fails its review gates: min_auc" in str(r.exception)
    assert ModelRegistry(tmp_path / "models").aliases("fraud") == {"champion": "1"}
    r = run(_app(), ["models", "alias", "fraud", "champion", "2", "--why", "x"])
    assert "--override --why" in str(r.exception)
    r = run(_app(), ["models", "alias", "fraud", "champion", "2", "--override", "--why",
                     "load test only"])
    assert r.exit_code == 0 and "champion: 1 -> 2 (gates FAILED: min_auc" in r.output
    last = ModelRegistry(tmp_path / "models").audit("fraud")[-1]
    assert (last["override"], last["who"], last["why"]) == (True, "os:dana", "load test only")
    # the card of NAME@VERSION and NAME@ALIAS
    card = run(_app(), ["models", "show", "fraud@1"]).output
    for text in ("fraud v1", "fingerprint", "v:x1", "AUC 0.", "Review gates", "pass min_auc",
                 "By country", "A: ", "Calibration", "num_leaves = 7"):
        assert text in card, (text, card)
    card2 = run(_app(), ["models", "show", "fraud@champion"]).output
    assert card2.startswith("fraud v2  (champion)") and "OVERRIDDEN" in card2
    assert "FAIL min_auc" in card2
    r = run(_app(), ["models", "policy", "fraud", "--set", str(params)])
    assert "unknown gate policy keys" in str(r.exception)
    # tessera deploy / promote / rollback go through the same gates
    from serving.experiments.spec import DeploymentStore
    from tessera import cli_experiments

    app = _app()
    cli_experiments.register(app)
    assert run(app, ["deploy", "fraud", "--champion", "1", "-m", "reset"]).exit_code == 0
    assert run(app, ["deploy", "fraud", "--shadow", "2", "-m", "watch"]).exit_code == 0
    store = DeploymentStore(tmp_path / "models")
    rev = store.revision("fraud")
    r = run(app, ["promote", "fraud", "--from", "2"])
    assert "fails its review gates" in str(r.exception) and store.revision("fraud") == rev
    r = run(app, ["promote", "fraud", "--from", "2", "--override", "--why", "drill"])
    assert r.exit_code == 0 and store.current("fraud").champion == "2", r.output
    reg = ModelRegistry(tmp_path / "models")
    assert reg.aliases("fraud")["champion"] == "2" and reg.audit("fraud")[-1]["override"]
    assert run(app, ["rollback", "fraud", "--why", "back"]).exit_code == 0
    assert reg.aliases("fraud")["champion"] == "1" and reg.audit("fraud")[-1]["gates"] == "skipped"
