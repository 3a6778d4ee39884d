"""Logs of the long-running commands: JSON lines when not on a terminal, with an access log."""

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from features.errors import DefinitionError
from serving.scorer.synthetic import write_repo_file
from tessera.local import free_port
from tessera.logs import logging_config
from tests.serving.http.conftest import wait_until_up


def test_a_bad_level_or_format_is_refused_with_the_choices():
    with pytest.raises(DefinitionError, match="debug, info"):
        logging_config("loud")
    with pytest.raises(DefinitionError, match="auto, json, text"):
        logging_config("info", "xml")
    assert logging_config("info", "text")["formatters"]["default"] == {
        "format": "%(asctime)s %(name)s %(levelname)s %(message)s"}


@pytest.mark.integration
def test_serve_writes_json_lines_and_an_access_record_per_request(tmp_path, redis_client,
                                                                  redis_url):
    from tests.serving.scorer.world import make_world

    make_world(redis_client, tmp_path)
    repo = write_repo_file(tmp_path / "repo.py")
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "TESSERA_HOME": str(tmp_path),
           "TESSERA_REPO": str(repo)}
    err = tmp_path / "serve.log"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tessera", "serve", "--port", str(port), "--log-level",
             "info", "--access-log"], env=env, start_new_session=True, stderr=stderr,
            stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/readyz", proc, log_file=err)
        assert httpx.post(f"{base}/v1/predict/fraud",
                          json={"entities": [{"user_id": "u1"}]}).status_code == 200
        assert httpx.post(f"{base}/v1/predict/nope", json={"entities": []}).status_code >= 400
        time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    raw = err.read_bytes()
    assert b"\x1b" not in raw
    records = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
    assert all({"time", "logger", "level", "message"} <= r.keys() for r in records)
    assert not any("\x1b" in str(r) for r in records)  # nor escaped inside the JSON
    access = [r["message"] for r in records if r["logger"] == "uvicorn.access"]
    assert any("POST /v1/predict/fraud" in m and "200" in m for m in access), access
    assert any("/v1/predict/nope" in m and " 4" in m for m in access), access
