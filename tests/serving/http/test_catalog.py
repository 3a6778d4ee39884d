"""``GET /v1/catalog`` in the served app (``build_app``): the applied views, described, each with
the registered model versions that read it; the push route is wired in the same app."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from features.registry import load_repo
from features.settings import Settings
from serving.http.main import ServeConfig, build_app
from serving.registry import ModelRegistry
from tessera import cli_features
from tests.serving.http.conftest import running

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "feature_repo.py"


def test_catalog_route_lists_views_and_their_models(tmp_path, monkeypatch, redis_url,
                                                   kafka_bootstrap, unique_name):
    import typer
    from kafka.admin import KafkaAdminClient, NewTopic

    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    app = typer.Typer()
    cli_features.register(app)
    repo = tmp_path / "repo.py"  # the example on a topic of its own (the broker is shared)
    repo.write_text(EXAMPLE.read_text().replace('    partitions=4,\n',
                                                f'    partitions=4,\n    topic="{unique_name}",\n'))
    assert CliRunner().invoke(app, ["apply", "--repo", str(repo)]).exit_code == 0
    settings = Settings.from_env()
    spend = load_repo(settings).views["user_spend"]
    reg = ModelRegistry(settings.models_dir)
    for _ in range(2):
        mv = reg.register("fraud", "tree\n", {"features": ["user_spend:amount_sum_1h"],
                                              "feature_views": {"user_spend": spend.version}})
    reg.set_alias("fraud", "champion", mv.version, who="test", why="test")

    served = build_app(ServeConfig(redis_url=redis_url, models_uri=str(settings.models_dir),
                                   models=[]))
    with running(served) as url:
        r = httpx.get(f"{url}/v1/catalog", timeout=10)
        assert r.status_code == 200, r.text
        views = {v["name"]: v for v in r.json()["views"]}
        push = httpx.post(f"{url}/v1/push/transactions", json=[{}], timeout=10)
    # with a broker in the settings, the served app publishes pushed events to the topic
    monkeypatch.setenv("KAFKA_BOOTSTRAP", kafka_bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(unique_name, 4, 1)])
    admin.close()
    event = {"user_id": "u1", "merchant_id": "m1", "amount": 3.5, "country": "FR",
             "ts": "2026-12-01T10:00:00Z"}
    served = build_app(ServeConfig(redis_url=redis_url, models_uri=str(settings.models_dir),
                                   models=[]))
    with running(served) as url:
        pushed = httpx.post(f"{url}/v1/push/transactions", json=[event, {"user_id": "u2"}],
                            timeout=30)
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["accepted"] == 1 and pushed.json()["rejected"][0]["index"] == 1
    assert sorted(views) == ["user_profile", "user_spend", "user_spend_max", "user_txn_count"]
    v = views["user_spend"]
    assert v["version"] == spend.version and v["kind"] == "windowed"
    assert v["source"]["topic"] == unique_name and v["entity"]["keys"] == ["user_id"]
    assert [f["name"] for f in v["features"]] == spend.feature_names
    assert v["features"][0] == {"name": "amount_sum_1h", "aggregation": "sum",
                                "field": "amount", "type": "float", "window": "1h", "hop": "5m"}
    assert v["models"] == [
        {"model": "fraud", "version": "1", "aliases": [], "view_version": spend.version},
        {"model": "fraud", "version": "2", "aliases": ["champion"],
         "view_version": spend.version}]
    assert views["user_profile"]["kind"] == "batch" and views["user_profile"]["models"] == []
    assert views["user_profile"]["ttl"] == "90d"
    # the served app has the push route; without a broker configured it says so
    assert push.status_code == 503 and push.json()["code"] == "push_disabled"
