"""``tessera audit log`` after token changes and a materialize from the command line: each is
one record naming the OS user, in order; ``tessera audit`` alone asks for --source or log."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import polars as pl
import pytest
from typer.testing import CliRunner

from tessera import cli

REPO = (
    "from features import BatchFeatureView, Entity\n"
    "user = Entity('user', keys=['user_id'])\n"
    "profile = BatchFeatureView('profile', entity=user, path='profile.parquet',\n"
    "    timestamp_field='ts', schema={'limit': 'float'}, ttl='10d')\n")


@pytest.mark.integration
def test_token_changes_and_materialize_are_audited(tmp_path, monkeypatch, redis_client,
                                                   redis_url):
    for k, v in {"TESSERA_HOME": str(tmp_path), "REDIS_URL": redis_url, "LOGNAME": "dave"
                 }.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "batch").mkdir()
    ts = datetime.fromtimestamp(time.time() - 3600, UTC)
    pl.DataFrame({"user_id": ["u1", "u2"], "ts": [ts, ts], "limit": [1.0, 2.0]}).write_parquet(
        tmp_path / "batch" / "profile.parquet")
    (tmp_path / "repo.py").write_text(REPO)
    cli._register()
    run = CliRunner().invoke
    token = run(cli.app, ["tokens", "create", "--name", "svc", "--scope", "predict"])
    assert token.exit_code == 0, token.output
    token_id = token.stdout.strip().split("_")[1]
    assert run(cli.app, ["tokens", "revoke", token_id]).exit_code == 0
    out = run(cli.app, ["materialize", "--repo", str(tmp_path / "repo.py")])
    assert out.exit_code == 0, out.output
    out = run(cli.app, ["audit", "log", "--json"])
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["who"], r["action"]) for r in rows] == [
        ("os:dave", "token.create"), ("os:dave", "token.revoke"), ("os:dave", "materialize")]
    assert token_id in rows[0]["what"] and "predict" in rows[0]["what"]
    assert "2 entities" in rows[2]["what"]
    text = run(cli.app, ["audit", "log"]).stdout
    assert f"os:dave  revoked token {token_id} (svc)" in text


def test_audit_alone_asks_for_a_source_or_log(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    cli._register()
    out = CliRunner().invoke(cli.app, ["audit"])
    assert out.exit_code == 2 and "tessera audit log" in out.output
    out = CliRunner().invoke(cli.app, ["audit", "log"])
    assert out.exit_code == 0 and "no audit records yet" in out.output
