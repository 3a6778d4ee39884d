"""The provisioned Grafana dashboard: a well-formed dashboard on the provisioned datasource that
queries only metrics Tessera really exports, and covers what the stack is watched for."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
SUFFIXES = {  # sample names a family exposes, by type
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
PROMQL_WORDS = {"by", "without", "ignoring", "on", "group_left", "group_right", "offset", "bool",
                "and", "or", "unless"}


def exported_metric_names() -> set[str]:
    """Every sample name Tessera's processes can expose: the modules that define metrics on
    the default registry (found by grepping for prometheus_client), plus the worker's own."""
    from prometheus_client import REGISTRY, CollectorRegistry

    from streams.worker.metrics import WorkerMetrics

    for package in ("features", "streams", "serving", "tessera"):
        for path in sorted((ROOT / package).rglob("*.py")):
            imports = re.findall(r"^from prometheus_client import (\([^)]*\)|.*)$",
                                 path.read_text(), flags=re.M)
            if re.search(r"\b(Counter|Gauge|Histogram|Summary)\b", " ".join(imports)):
                rel = path.relative_to(ROOT).with_suffix("")
                importlib.import_module(".".join(rel.parts))
    names = set()
    for registry in (REGISTRY, WorkerMetrics(CollectorRegistry()).registry):
        for family in registry.collect():
            names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "tessera.json").read_text())


def _queried(panel: dict) -> list[str]:
    return [t["expr"] for t in panel.get("targets", [])]


def _metric_names(expr: str) -> set[str]:
    """Identifiers of a PromQL expression that name series (not functions, label names,
    keywords, strings or durations)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range durations
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        word, after = m.group(), expr[m.end():].lstrip()
        if word in PROMQL_WORDS or after.startswith("("):
            continue
        names.add(word)
    return names


def test_every_queried_metric_is_one_tessera_exports(dashboard):
    exported = exported_metric_names()
    assert {"tessera_worker_freshness_seconds", "tessera_predict_seconds_bucket",
            "tessera_monitor_psi", "tessera_worker_consumed_events_total"} <= exported
    for panel in dashboard["panels"]:
        for expr in _queried(panel):
            names = _metric_names(expr)
            assert names, f"{panel['title']}: no metric in {expr!r}"
            unknown = names - exported
            assert not unknown, f"{panel['title']} queries {unknown}, which Tessera never exports"


def test_the_metric_check_rejects_a_misspelt_name():
    assert _metric_names("sum by (le, model) (rate(tessera_predict_second_bucket[5m]))") == {
        "tessera_predict_second_bucket"}
    assert "tessera_predict_second_bucket" not in exported_metric_names()


def test_dashboard_is_well_formed_and_on_the_provisioned_datasource(dashboard):
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert graphs
    for p in graphs:
        assert p["type"] in {"timeseries", "stat", "gauge", "table", "bargauge"}, p["type"]
        assert p["datasource"]["uid"] == source["uid"], p["title"]
        assert p["targets"], f"{p['title']} has no query"
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == source["uid"] and t["expr"].strip()
        pos = p["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] + pos["w"] <= 24, p["title"]


def test_dashboard_is_loaded_by_the_provider_compose_mounts(dashboard):
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "tessera.yml").read_text())["providers"][0]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


def test_dashboard_covers_the_stack(dashboard):
    queried = " ".join(e for p in dashboard["panels"] for e in _queried(p))
    for metric in ("tessera_worker_freshness_seconds",  # freshness
                   "tessera_worker_consumer_lag",  # consumer lag
                   "tessera_worker_consumed_events_total",  # throughput
                   "tessera_predictions_total",
                   "tessera_predict_seconds_bucket",  # predict latency
                   "tessera_monitor_psi",  # drift per feature
                   "tessera_shadow_dropped_total"):  # experiments
        assert metric in queried, metric
    psi = next(p for p in dashboard["panels"] if "tessera_monitor_psi" in " ".join(_queried(p)))
    assert any("column" in e for e in _queried(psi)), "PSI must be per feature (column)"
