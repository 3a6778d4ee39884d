"""The /ui page in a real headless Chromium against a running app with real numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.dashboard.data import DashboardData, audit_files
from serving.dashboard.routes import dashboard_router
from serving.experiments.report import build_report
from serving.experiments.simulate import simulate_log
from serving.experiments.spec import DeploymentSpec, DeploymentStore
from serving.monitoring.reference import build_reference
from serving.monitoring.report import monitor_report
from serving.monitoring.simulate import FEATURES, prediction_log, reference_columns
from serving.monitoring.sources import ModelTarget, model_window
from tests.serving.dashboard.conftest import block_other_origins

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Every panel fed from the real code paths: monitor, experiment report, audit files."""
    cols = reference_columns(n=5000)
    score = cols.pop("score")
    target = ModelTarget("3", build_reference(cols, score), FEATURES)
    log = pl.concat([prediction_log(1, 2000), prediction_log(2, 1000, shift=1.5, t0=10**9)])
    monitor = monitor_report(
        "fraud", model_window(log, "fraud", target, rows=1000), target.reference, version="3"
    ).to_dict()

    spec = DeploymentSpec("fraud", "3", shadows=("4",), salt="s")
    models = tmp_path_factory.mktemp("models")
    store = DeploymentStore(models)
    store.save(DeploymentSpec("fraud", "3", salt="s"), why="first champion", who="ci")
    spec = store.save(spec, why="retrained on drift", who="ci")
    preds, outcomes = simulate_log(spec, 8000, {"3": 1.5, "4": 0.5}, labelled=0.5, seed=2)
    experiment = build_report(preds, outcomes, spec, reps=50)

    return {
        "monitor": monitor,
        "experiment": experiment,
        "data": DashboardData(
            freshness=lambda: [
                {"view": "user_txn_count", "age_s": 1.2, "lag": 0},
                {"view": "user_spend", "age_s": 3.4, "lag": 12},
            ],
            throughput=lambda: [{"name": "worker events", "per_s": 5321.0, "total": 1_000_000}],
            monitors=lambda: [monitor],
            experiments=lambda: [experiment],
            lineage=lambda: [
                {
                    "model": "fraud",
                    "version": "4",
                    "parent": "3",
                    "created": "2026-11-27",
                    "training_set": "abc123",
                    "metrics": {"auc": 0.81},
                    "aliases": ["challenger"],
                },
                {
                    "model": "fraud",
                    "version": "3",
                    "created": "2026-11-20",
                    "metrics": {"auc": 0.78},
                    "aliases": ["champion"],
                },
            ],
            audit=audit_files(models),
        ),
    }


def _app(data: DashboardData) -> FastAPI:
    app = FastAPI()
    app.include_router(dashboard_router(data, refresh_s=None))
    return app


@pytest.mark.integration
def test_dashboard_renders_every_chart_with_live_numbers(browser, serve, data):
    base = serve(_app(data["data"]))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    outside = block_other_origins(page, base)
    page.goto(f"{base}/ui", wait_until="load")
    page.wait_for_function("document.body.dataset.charts !== undefined", timeout=10_000)
    assert errors == [] and outside == []

    # one histogram per monitored column, AUC-with-CI, calibration and the confidence sequence,
    # freshness, throughput
    expected = len(data["monitor"]["columns"]) + 3 + 2
    charts = page.evaluate(
        """() => Object.entries(window.tesseraCharts).map(([id, c]) => ({
            id, title: c.canvas.dataset.title, type: c.config.type,
            width: c.width, height: c.height,
            data: c.data.datasets.map(d => d.data),
            painted: (() => {  // share of non-transparent pixels actually drawn
                const ctx = c.canvas.getContext('2d');
                const px = ctx.getImageData(0, 0, c.canvas.width, c.canvas.height).data;
                let n = 0; for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
                return n / (px.length / 4);
            })(),
        }))"""
    )
    assert len(charts) == expected
    for c in charts:
        assert c["width"] > 100 and c["height"] > 100, c["title"]
        assert all(len(d) > 0 for d in c["data"]), c["title"]
        assert c["painted"] > 0.01, f"{c['title']} drew nothing"

    # the drift histogram of "amount" shows exactly the monitor's live and reference shares
    amount = next(c for c in data["monitor"]["columns"] if c["name"] == "amount")
    drawn = next(c for c in charts if c["title"].startswith("amount "))
    assert drawn["data"][0] == pytest.approx(amount["ref_hist"])
    assert drawn["data"][1] == pytest.approx(amount["live_hist"])
    # the experiment chart carries the report's AUCs and their CIs
    exp = data["experiment"]
    auc_chart = next(c for c in charts if c["title"].startswith("AUC"))
    assert auc_chart["data"][1][0] == pytest.approx(exp["champion"]["auc"])
    assert auc_chart["data"][0][0] == pytest.approx(exp["champion"]["ci"]["auc"])
    calib = next(c for c in charts if c["title"].startswith("Calibration"))
    assert len(calib["data"]) == 1 + 2  # the diagonal, champion, shadow

    text = page.inner_text("body")
    assert "ALERT" in text and "retrained on drift" in text and "abc123" in text
    assert exp["shadows"][0]["vs_champion"]["verdict"]["sentence"] in text
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    page.close()


def test_empty_and_failing_sources_render_gracefully():
    def broken():
        raise ConnectionError("worker metrics unreachable")

    client = TestClient(_app(DashboardData(freshness=broken)))
    r = client.get("/ui")
    assert r.status_code == 200
    assert r.text.count("no data yet") == 5
    assert "source failed: ConnectionError: worker metrics unreachable" in r.text
    assert client.get("/ui/data.json").json()["freshness"]["error"].startswith("Connection")
    js = client.get("/ui/static/chart.umd.min.js")
    assert js.status_code == 200 and "Chart" in js.text[:2000]
    assert client.get("/ui/static/..%2Fpage.py").status_code == 404


def test_nan_numbers_become_gaps_not_broken_json():
    rows = [{"view": "v", "age_s": float("nan")}, {"view": "w", "age_s": np.float64(2.0)}]
    client = TestClient(_app(DashboardData(freshness=lambda: rows)))
    assert client.get("/ui/data.json").json()["freshness"]["rows"][0]["age_s"] is None
    assert client.get("/ui").status_code == 200


@pytest.mark.integration
def test_hostile_names_cannot_break_the_page_and_the_csp_holds(browser, serve, data):
    """A model or feature named like markup (``<!--<script>``, ``</script>``) shows as text:
    every chart still draws, nothing outside the page's own script runs, and the page carries
    a Content-Security-Policy that its own inline script and style satisfy."""
    import json as _json

    hostile = "<!--<script>x</script><img src=x onerror=alert(1)>"

    def renamed(obj):
        return _json.loads(_json.dumps(obj).replace("amount", f"amount{hostile}")
                           .replace('"fraud"', _json.dumps(f"fraud{hostile}")))

    monitor, experiment = renamed(data["monitor"]), renamed(data["experiment"])
    bad = DashboardData(freshness=lambda: [], throughput=lambda: [],
                        monitors=lambda: [monitor], experiments=lambda: [experiment],
                        lineage=lambda: [], audit=lambda: [])
    base = serve(_app(bad))
    client = TestClient(_app(bad))
    r = client.get("/ui")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp
    specs = r.text.split('id="chart-specs">', 1)[1].split("</script>", 1)[0]
    assert "<" not in specs and hostile not in r.text  # escaped everywhere in the HTML
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: (errors.append("dialog: " + d.message), d.dismiss()))
    page.goto(f"{base}/ui", wait_until="load")
    page.wait_for_function("document.body.dataset.charts !== undefined", timeout=10_000)
    titles = page.evaluate("() => Object.values(window.tesseraCharts).map(c => c.canvas."
                           "dataset.title)")
    assert errors == []
    assert len(titles) == len(monitor["columns"]) + 3
    assert any(hostile in t for t in titles)  # the name is shown as text, intact
    assert hostile in page.inner_text("body")
    page.close()
