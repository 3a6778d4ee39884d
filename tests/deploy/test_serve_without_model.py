"""A fresh stack has no trained model yet: what the compose and Kubernetes scorer runs then.

``tessera serve`` alone exits 2 (and a restart policy loops on it); with ``--allow-no-model``
the same command serves ``/v1/features``, says alive on ``/healthz`` and not ready on
``/readyz`` (no model loaded), which is what the healthcheck and the probes rely on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tessera.local import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REPO = str(ROOT / "examples" / "feature_repo.py")


def _env(tmp_path: Path, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP"}
    env.update(TESSERA_HOME=str(tmp_path), REDIS_URL=redis_url, TESSERA_FEATURE_REPO=REPO)
    return env


def test_serve_without_a_model_exits_2_with_what_to_do(tmp_path, redis_url):
    out = subprocess.run([sys.executable, "-m", "tessera", "serve", "--port", str(free_port())],
                         env=_env(tmp_path, redis_url), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "no model with a champion alias" in out.stderr and "tessera train" in out.stderr


def test_allow_no_model_serves_features_alive_but_not_ready(tmp_path, redis_url):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tessera", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2", "--allow-no-model"],
        env=_env(tmp_path, redis_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "scorer never answered /healthz"
            time.sleep(0.1)
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 503
        assert "no model loaded" in ready.json()["problems"]
        features = httpx.post(f"{base}/v1/features", timeout=5, json={
            "features": ["user_spend:amount_sum_1h"], "entities": [{"user_id": "u1"}]})
        assert features.status_code == 200, features.text
        predict = httpx.post(f"{base}/v1/predict/fraud", timeout=5,
                             json={"entities": [{"user_id": "u1"}]})
        assert 400 <= predict.status_code < 500 and predict.json()["error"], predict.text
        assert httpx.get(f"{base}/metrics", timeout=5).status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "serving features only" in err
