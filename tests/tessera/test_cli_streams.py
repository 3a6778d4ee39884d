"""Stream CLI: up/down start and stop real services; produce reports sent and rejected."""

from __future__ import annotations

import json
import os

import pytest
import typer
from typer.testing import CliRunner

from streams.topics import delete_topics
from tessera import cli_streams

pytestmark = pytest.mark.integration


def _app() -> typer.Typer:
    app = typer.Typer()
    cli_streams.register(app)
    return app


def test_up_starts_services_and_down_stops_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    runner = CliRunner()
    up = runner.invoke(_app(), ["up"])
    assert up.exit_code == 0, up.output
    state = json.loads((tmp_path / "services.json").read_text())
    assert json.loads(up.output)["bootstrap"] == state["bootstrap"]
    pids = state["pids"]
    assert len(pids) == 2 and all(os.path.exists(f"/proc/{p}") for p in pids)
    down = runner.invoke(_app(), ["down"])
    assert down.exit_code == 0 and "stopped 2" in down.output
    assert not (tmp_path / "services.json").exists()


def test_produce_file_counts_sent_and_rejected(tmp_path, monkeypatch, kafka_bootstrap,
                                               unique_name):
    repo = tmp_path / "repo.py"
    repo.write_text(
        "from features import Entity, EventSource\n"
        f"src = EventSource('{unique_name}', {{'user_id': 'string', 'amount': 'float', "
        "'ts': 'timestamp'}, 'ts', Entity('user', ['user_id']), partitions=2)\n"
    )
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"user_id": "a", "amount": 1.5, "ts": "2026-11-27T03:00:00Z"}\n'
        '{"user_id": "b", "amount": "x", "ts": "2026-11-27T03:00:00Z"}\n'
        "{broken\n"
        '{"user_id": "c", "amount": 2, "ts": 1795748400000}\n'
    )
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    monkeypatch.setenv("KAFKA_BOOTSTRAP", kafka_bootstrap)
    try:
        out = CliRunner().invoke(_app(), ["produce", "--source", unique_name, "--file",
                                          str(events), "--repo", str(repo)])
    finally:
        delete_topics([unique_name, f"{unique_name}.dlq", f"{unique_name}.repartition"],
                      kafka_bootstrap)
    assert out.exit_code == 0, out.output
    assert "sent 2, rejected 2, failed 0" in out.output
    assert "'amount'" in out.output and "line 3 is not valid JSON" in out.output


def test_worker_logs_json_lines_and_ends_on_a_parseable_stats_line(
        tmp_path, kafka_bootstrap, redis_url, unique_name):
    """Output to files (not a terminal): no cursor escapes from faust's spinner, every stderr
    line a JSON log record, the last stdout line the worker's stats as JSON."""
    import subprocess
    import sys

    repo = tmp_path / "repo.py"
    repo.write_text(
        "from features import Entity, EventSource\n"
        f"src = EventSource('{unique_name}', {{'user_id': 'string', 'amount': 'float', "
        "'ts': 'timestamp'}, 'ts', Entity('user', ['user_id']), partitions=1)\n"
    )
    env = dict(os.environ, TESSERA_HOME=str(tmp_path), KAFKA_BOOTSTRAP=kafka_bootstrap,
               REDIS_URL=redis_url)
    no_views = subprocess.run([sys.executable, "-m", "tessera", "worker", "--repo", str(repo)],
                              capture_output=True, text=True, env=env, timeout=60)
    assert no_views.returncode == 2 and "no windowed feature view" in no_views.stderr
    with repo.open("a") as f:
        f.write("from features import Aggregate, FeatureView\n"
                "v = FeatureView('v', src, [Aggregate('count', ['1h'])])\n")
    env = dict(os.environ, TESSERA_HOME=str(tmp_path), KAFKA_BOOTSTRAP=kafka_bootstrap,
               REDIS_URL=redis_url)
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    try:
        with out.open("wb") as o, err.open("wb") as e:
            rc = subprocess.run(
                [sys.executable, "-m", "tessera", "worker", "--repo", str(repo), "--group",
                 unique_name, "--max-idle-s", "1", "--log-level", "info"],
                stdout=o, stderr=e, env=env, timeout=120).returncode
    finally:
        delete_topics([unique_name, f"{unique_name}.dlq", f"{unique_name}.repartition"],
                      kafka_bootstrap)
    assert rc == 0, err.read_text()[-2000:]
    raw = out.read_bytes() + err.read_bytes()
    assert b"\x1b" not in raw
    records = [json.loads(line) for line in err.read_text().splitlines() if line.strip()]
    assert records and all({"time", "logger", "level", "message"} <= r.keys() for r in records)
    assert any(r["level"] == "INFO" for r in records)
    stats = json.loads(out.read_text().strip().splitlines()[-1])
    assert stats[unique_name]["consumed"] == 0
