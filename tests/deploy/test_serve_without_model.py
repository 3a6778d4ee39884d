"""A fresh stack has no trained model yet: what the compose and Kubernetes scorer runs then.

``tessera serve`` alone exits 2 (and a restart policy loops on it); with ``--allow-no-model``
the same command serves ``/v1/features``, says alive on ``/healthz`` and not ready on
``/readyz`` (no model loaded), which is what the healthcheck and the probes rely on. It listens
beyond loopback, as in a container, after the stack's token step made a token.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tessera.local import free_port
from tests.serving.http.conftest import wait_until_up

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REPO = str(ROOT / "examples" / "feature_repo.py")


@pytest.fixture
def env(tmp_path, redis_url, monkeypatch) -> dict[str, str]:
    """A fresh home with the feature repo applied and nothing trained: the compose stack after
    its `apply` service ran (no broker: topics are not the point here)."""
    from typer.testing import CliRunner

    from tessera import cli

    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", redis_url)
    cli._register()
    res = CliRunner().invoke(cli.app, ["apply", "--repo", REPO])
    assert res.exit_code == 0, res.output
    return dict(os.environ)


def test_serve_without_a_model_refuses_with_what_to_do(env):
    from typer.testing import CliRunner

    from features.errors import RegistryError
    from tessera import cli

    res = CliRunner().invoke(cli.app, ["serve", "--port", str(free_port())])
    # a TesseraError: `tessera` (cli.main) prints it and exits 2
    assert isinstance(res.exception, RegistryError), res.output
    assert "no model with a champion alias" in str(res.exception)
    assert "tessera train" in str(res.exception)


def _token_step() -> str:
    """The compose `token` service / the Kubernetes token Job: what it prints (once)."""
    from typer.testing import CliRunner

    from tessera import cli

    args = ["tokens", "create", "--name", "compose-admin", "--scope", "admin", "--if-missing"]
    return CliRunner().invoke(cli.app, args, catch_exceptions=False).stdout.strip()


def test_the_token_step_creates_one_token_however_often_it_runs(env):
    from serving.auth.tokens import TokenStore

    first, again = _token_step(), _token_step()
    assert first.startswith("tsr_") and again == ""
    assert len(TokenStore.at_home(Path(env["TESSERA_HOME"])).records()) == 1


def test_allow_no_model_serves_features_alive_but_not_ready(env):
    token = _token_step()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tessera", "serve", "--host", "0.0.0.0", "--port", str(port),
         "--allow-no-model"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/healthz", proc, within_s=60)
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 503
        assert "no model loaded" in ready.json()["problems"]
        body = {"features": ["user_spend:amount_sum_1h"], "entities": [{"user_id": "u1"}]}
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.post(f"{base}/v1/features", timeout=5, json=body).status_code == 401
        features = httpx.post(f"{base}/v1/features", timeout=5, json=body, headers=auth)
        assert features.status_code == 200, features.text
        predict = httpx.post(f"{base}/v1/predict/fraud", timeout=5, headers=auth,
                             json={"entities": [{"user_id": "u1"}]})
        assert 400 <= predict.status_code < 500 and predict.json()["error"], predict.text
        assert httpx.get(f"{base}/metrics", timeout=5).status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "serving features only" in err
