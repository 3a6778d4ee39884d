import json
import logging

import polars as pl
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from serving.monitoring.alerts import Alerter
from serving.monitoring.reference import build_reference
from serving.monitoring.report import monitor_report
from serving.monitoring.routes import monitor_router
from serving.monitoring.simulate import FEATURES, prediction_log, reference_columns
from serving.monitoring.sources import ModelTarget, model_window

from .webhook import capture_posts


@pytest.fixture(scope="module")
def target():
    cols = reference_columns()
    score = cols.pop("score")
    return ModelTarget("3", build_reference(cols, score), FEATURES)


@pytest.fixture
def webhook():
    with capture_posts() as hook:
        yield hook


def _report(target, model, shift, seed):
    window = model_window(prediction_log(seed, 1000, shift=shift, model=model), model, target)
    return monitor_report(model, window, target.reference, version="3")


def _metric(name, **labels):
    return REGISTRY.get_sample_value(name, labels)


def test_alert_raised_once_then_resolved_with_log_metric_and_webhook(target, webhook, caplog):
    url, received = webhook
    alerter = Alerter(webhook_url=url)
    caplog.set_level(logging.WARNING, logger="tessera.monitor")
    before = _metric("tessera_monitor_alerts_total", model="m1", column="amount", kind="drift")

    assert alerter.observe(_report(target, "m1", 0.0, 1)) == []
    raised = alerter.observe(_report(target, "m1", 1.5, 2))
    assert {(e["column"], e["kind"], e["state"]) for e in raised} == {
        ("amount", "drift", "raised"),
        ("score", "drift", "raised"),
    }
    assert alerter.observe(_report(target, "m1", 1.5, 3)) == []  # still on: no repeat
    resolved = alerter.observe(_report(target, "m1", 0.0, 4))
    assert {e["state"] for e in resolved} == {"resolved"}

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "tessera.monitor"]
    assert [(x["column"], x["state"]) for x in lines if x["column"] == "amount"] == [
        ("amount", "raised"),
        ("amount", "resolved"),
    ]
    assert lines[0]["event"] == "tessera.monitor.alert" and lines[0]["psi"] > 0.2

    after = _metric("tessera_monitor_alerts_total", model="m1", column="amount", kind="drift")
    assert after - (before or 0) == 1
    assert _metric("tessera_monitor_alert_active", model="m1", column="amount", kind="drift") == 0
    assert _metric("tessera_monitor_psi", model="m1", column="amount") < 0.1

    assert len(received) == 2  # one POST per change, carrying all of its events
    assert {e["state"] for e in received[0]["alerts"]} == {"raised"}
    assert received[0]["alerts"][0]["model"] == "m1"


def test_unreachable_webhook_is_counted_not_raised(target, caplog):
    before = _metric("tessera_monitor_webhook_failures_total") or 0
    alerter = Alerter(webhook_url="http://127.0.0.1:9/nothing", timeout_s=0.5)
    events = alerter.observe(_report(target, "m2", 2.0, 5))
    assert events and _metric("tessera_monitor_webhook_failures_total") == before + 1


def test_http_route_serves_the_report(target):
    log = pl.concat([prediction_log(6, 2000), prediction_log(7, 1000, shift=2.0, t0=10**9)])
    app = FastAPI()
    app.include_router(monitor_router(lambda name: target, lambda: log, rows=1000))
    client = TestClient(app)
    r = client.get("/v1/monitor/fraud")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "alert" and body["rows"] == 1000
    assert {a["column"] for a in body["alerts"]} >= {"amount"}
    assert {c["name"] for c in body["columns"]} == {*FEATURES, "score"}


def test_http_route_says_what_to_do_for_an_unknown_model(tmp_path):
    from serving.monitoring.sources import ReferenceFiles

    app = FastAPI()
    app.include_router(monitor_router(ReferenceFiles(tmp_path), lambda: pl.DataFrame()))
    r = TestClient(app).get("/v1/monitor/nope")
    assert r.status_code == 404 and "no reference" in r.json()["detail"]
