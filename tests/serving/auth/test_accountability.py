"""Who did what, on a real server with two tokens: an alias move by one token and a forget by
the other record each token's name, a CLI action records the OS user, and ``tessera audit log``
and ``/ui`` show all three with when and why."""

import json
import time

import httpx
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from features.offline.event_log import EventLog
from features.online.layout import entity_key
from serving.auth.tokens import TokenStore
from serving.http.main import ServeConfig, build_app
from serving.scorer.synthetic import TXN, USER, write_repo_file
from tessera import cli
from tests.serving.http.conftest import running
from tests.serving.scorer.world import make_world

pytestmark = pytest.mark.integration


@pytest.fixture
def served(tmp_path, monkeypatch, redis_client, redis_url):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    monkeypatch.setenv("LOGNAME", "carol")  # the OS user getpass reports, for the CLI
    _, reg, now = make_world(redis_client, tmp_path)
    EventLog(tmp_path / "offline").append(TXN, pa.table({
        "user_id": ["u7", "u7", "u8"], "amount": [1.0, 2.0, 3.0],
        "ts": pa.array([now - 10, now - 5, now - 1], pa.timestamp("us", tz="UTC")),
        "_offset": [0, 1, 2],
        "_ingest_ts": pa.array([now] * 3, pa.timestamp("us", tz="UTC")),
    }), topic="txn", partition=0)
    repo = write_repo_file(tmp_path / "repo.py")
    store = TokenStore.at_home(tmp_path)
    tokens = {n: store.create(n, [s]) for n, s in
              (("deployer", "admin"), ("privacy-office", "admin"), ("viewer", "ui"))}
    app = build_app(ServeConfig(redis_url, str(reg.storage.root), ["fraud"], repo))
    with running(app) as url:
        deadline = time.monotonic() + 5
        while httpx.get(f"{url}/ui").status_code != 401:  # the token file is re-read each s
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield url, tokens, redis_client, tmp_path


def _as(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_each_token_and_the_os_user_are_recorded(served):
    url, tokens, redis_client, home = served
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/v1/admin/models/fraud/aliases/challenger", headers=_as(tokens["deployer"]),
                   json={"version": "2", "why": "try v2"})
        assert r.status_code == 200, r.text
        assert (r.json()["who"], r.json()["after"]) == ("token:deployer", "2")
        assert c.post("/v1/admin/forget", headers=_as(tokens["viewer"]),
                      json={"entity": "u7"}).status_code == 403
        r = c.post("/v1/admin/forget", headers=_as(tokens["privacy-office"]),
                   json={"entity": "u7", "why": "erasure #9"})
        assert r.status_code == 200, r.text
        assert (r.json()["online_keys"], r.json()["offline_rows"]) == (1, 2)
        bad = c.post("/v1/admin/forget", headers=_as(tokens["privacy-office"]),
                     json={"entity": "u7", "views": ["nope"]})
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_forget"
    assert not redis_client.exists(entity_key(USER, ["u7"]))
    assert redis_client.exists(entity_key(USER, ["u8"]))
    cli._register()
    out = CliRunner().invoke(cli.app, ["models", "alias", "fraud", "challenger", "1",
                                       "--why", "back to v1"])
    assert out.exit_code == 0, out.output
    out = CliRunner().invoke(cli.app, ["audit", "log", "--json"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    mine = [(r["who"], r.get("alias") or r.get("action"), r["why"]) for r in rows
            if r["who"] != "test"]  # make_world's first champion
    assert mine == [("token:deployer", "challenger", "try v2"),
                    ("token:privacy-office", "forget", "erasure #9"),
                    ("os:carol", "challenger", "back to v1")]
    text = CliRunner().invoke(cli.app, ["audit", "log", "--who", "token:deployer"]).stdout
    assert "token:deployer  fraud: alias challenger → v2" in text and "carol" not in text
    ui = httpx.get(f"{url}/ui", headers=_as(tokens["viewer"]), timeout=30).text
    for who in ("token:deployer", "token:privacy-office", "os:carol", "erasure #9"):
        assert who in ui
