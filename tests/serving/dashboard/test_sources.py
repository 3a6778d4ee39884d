"""The dashboard's providers against a real home folder and a real /metrics endpoint."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from features.settings import Settings
from serving.dashboard.sources import from_settings, scrape
from serving.experiments.sink import import_frame
from serving.experiments.spec import DeploymentSpec, DeploymentStore
from serving.monitoring.reference import build_reference
from serving.monitoring.simulate import prediction_log, reference_columns
from serving.monitoring.sources import ReferenceFiles, predictions_dir


@pytest.fixture
def metrics_url():
    registry = CollectorRegistry()
    fresh = Gauge("tessera_view_freshness_seconds", "age", ["view"], registry=registry)
    events = Counter("tessera_worker_events", "events applied", registry=registry)
    other = Gauge("tessera_unrelated", "ignored", registry=registry)
    fresh.labels("user_spend").set(2.5)
    other.set(7)
    events.inc(100)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield f"http://127.0.0.1:{server.server_port}/metrics", events
    server.shutdown()
    server.server_close()


def test_scrape_reads_freshness_and_turns_counters_into_rates(metrics_url):
    url, events = metrics_url
    freshness, throughput = scrape([url, "http://127.0.0.1:9/metrics"])  # one is down
    assert freshness() == [{"view": "user_spend", "age_s": 2.5, "lag": None}]
    first = throughput()
    assert first == [{"name": "tessera_worker_events", "per_s": 0.0, "total": 100.0}]
    events.inc(50)
    second = throughput()[0]
    assert second["total"] == 150.0 and second["per_s"] > 0


def test_from_settings_reads_drift_experiments_and_audit_from_the_home_folder(tmp_path):
    settings = Settings(home=tmp_path)
    cols = reference_columns(n=5000)
    score = cols.pop("score")
    ReferenceFiles(settings.models_dir).save("fraud", "3", build_reference(cols, score))
    DeploymentStore(settings.models_dir).save(
        DeploymentSpec("fraud", "3", salt="s"), why="first", who="ci"
    )
    # the prediction log as the experiments sink lays it out: Parquet files + a manifest
    import_frame(predictions_dir(settings.offline_dir), prediction_log(1, 1500, shift=1.5))
    snap = from_settings(settings).snapshot()
    [monitor] = snap["monitors"]["rows"]
    assert monitor["model"] == "fraud" and monitor["rows"] == 1500
    assert "amount" in {a["column"] for a in monitor["alerts"]}
    [experiment] = snap["experiments"]["rows"]
    assert experiment["champion"]["predictions"] == 1500
    assert [r["why"] for r in snap["audit"]["rows"]] == ["first"]
    assert snap["freshness"] == {"rows": []}


def test_from_settings_on_an_empty_home_has_no_data_and_no_errors(tmp_path):
    snap = from_settings(Settings(home=tmp_path)).snapshot()
    assert all(panel == {"rows": []} for panel in snap.values()), snap
