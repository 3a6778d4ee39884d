"""Retraining against a real registry, deployment store and prediction log layout."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from serving.experiments.report import dataset_dirs
from serving.experiments.simulate import simulate_log
from serving.experiments.sink import import_frame
from serving.experiments.spec import DeploymentStore
from serving.monitoring.retrain import Retrainer, RetrainPlan
from serving.registry import ModelRegistry
from serving.registry.training import train


def training_set(path, seed: int, n: int = 3000):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * a - b)))).astype(float)
    pl.DataFrame({"ts": np.arange(n) * 1_000_000, "label": y, "v__a": a, "v__b": b}).write_parquet(
        path
    )
    return path


def write_log(offline_dir, spec, noise, seed=0):
    """Predictions and outcomes as the experiments sink lays them out (files + manifest)."""
    preds, outcomes = simulate_log(spec, 20_000, noise, labelled=0.5, seed=seed)
    for folder, frame in zip(dataset_dirs(offline_dir), (preds, outcomes), strict=True):
        import_frame(folder, frame)


class AliasCrash(ModelRegistry):
    """Dies on the first alias move: the spec says v2, the alias still says v1."""

    crashed = False

    def set_alias(self, *args, **kwargs):
        if not self.crashed:
            self.crashed = True
            raise RuntimeError("crash between spec revision and alias move")
        return super().set_alias(*args, **kwargs)


@pytest.fixture
def home(tmp_path):
    models, offline = tmp_path / "models", tmp_path / "offline"
    registry = ModelRegistry(models)
    first = train(training_set(tmp_path / "old.parquet", 1), "label", seed=0)
    registry.register("fraud", first.model_text, first.metadata())
    registry.set_alias("fraud", "champion", "1", why="first")
    plan = RetrainPlan("fraud", training_set(tmp_path / "fresh.parquet", 2), "label")
    return models, offline, plan


def test_retrain_registers_with_lineage_shadows_then_promotes_when_better(home):
    models, offline, plan = home
    registry, store = ModelRegistry(models), DeploymentStore(models)
    r = Retrainer(registry, store, offline, models)
    state = r.start(plan)
    assert state["step"] == "shadow" and state["version"] == "2"
    meta = registry.metadata("fraud", "2")
    assert meta["parent"] == "1" and meta["training_set"]["fingerprint"].startswith("blake2b:")
    assert meta["features"] == registry.metadata("fraud", "1")["features"]
    assert store.current("fraud").shadows == ("2",)

    again = r.start(plan)  # the same run resumes: no second version, no second shadow
    assert again["run"] == state["run"] and registry.versions("fraud") == ["1", "2"]
    assert store.current("fraud").shadows == ("2",)

    write_log(offline, store.current("fraud"), {"1": 1.5, "2": 0.5})
    done = r.decide("fraud", state["run"])
    assert done["step"] == "promoted" and "better" in done["reason"]
    assert done["verdict"]["kind"] == "anytime-valid" and done["verdict"]["word"] == "better"
    assert 100 <= done["verdict"]["decided_at"] <= done["verdict"]["labels"]
    assert registry.resolve("fraud", "champion") == "2"
    spec = store.current("fraud")
    assert spec.champion == "2" and spec.shadows == ("1",)  # the old champion, on probation
    assert any("beats v1" in e.get("why", "") for e in store.audit_log("fraud"))

    later = r.start(plan)  # the same data after the promotion: not trained a second time
    assert later["run"] == state["run"] and later["step"] == "promoted"
    assert registry.versions("fraud") == ["1", "2"]


def test_a_worse_retrain_is_retired_with_its_reason(home):
    models, offline, plan = home
    registry, store = ModelRegistry(models), DeploymentStore(models)
    r = Retrainer(registry, store, offline, models)
    state = r.start(plan)
    write_log(offline, store.current("fraud"), {"1": 0.5, "2": 1.5})
    done = r.decide("fraud", state["run"])
    assert done["step"] == "retired" and "worse" in done["reason"]
    assert registry.resolve("fraud", "champion") == "1"
    assert store.current("fraud").shadows == ()


def test_no_difference_keeps_waiting_and_audits_once(home):
    models, offline, plan = home
    registry, store = ModelRegistry(models), DeploymentStore(models)
    r = Retrainer(registry, store, offline, models)
    state = r.start(plan)
    write_log(offline, store.current("fraud"), {"1": 1.0, "2": 1.0})
    for _ in range(2):
        waiting = r.decide("fraud", state["run"])
    assert waiting["step"] == "shadow" and waiting["verdict"]["word"] == "keep collecting"
    kept = [e for e in store.audit_log("fraud") if "kept as a shadow" in e.get("why", "")]
    assert len(kept) == 1


def test_crash_between_spec_and_alias_is_repaired_on_resume(home):
    models, offline, plan = home
    registry, store = AliasCrash(models), DeploymentStore(models)
    r = Retrainer(registry, store, offline, models)
    state = r.start(plan)
    write_log(offline, store.current("fraud"), {"1": 1.5, "2": 0.5})
    with pytest.raises(RuntimeError, match="crash"):
        r.decide("fraud", state["run"])
    assert store.current("fraud").champion == "2"
    assert registry.resolve("fraud", "champion") == "1"  # the two disagree after the crash
    done = r.decide("fraud", state["run"])
    assert done["step"] == "promoted"
    assert registry.resolve("fraud", "champion") == "2" == store.current("fraud").champion


def test_registry_lookup_reads_reference_and_feature_order_from_metadata(home):
    from serving.monitoring.errors import MonitorError
    from serving.monitoring.sources import registry_lookup

    models, _, _ = home
    registry = ModelRegistry(models)
    target = registry_lookup(registry)("fraud")
    assert target.version == "1"
    assert target.feature_names == tuple(registry.metadata("fraud")["features"])
    assert list(target.reference.features) == list(target.feature_names)
    assert target.reference.score is not None and target.reference.score.count > 0
    meta = registry.metadata("fraud")
    registry.register("fraud", registry.get("fraud").model_text, {**meta, "reference": None})
    with pytest.raises(MonitorError, match="no reference distributions"):
        registry_lookup(registry, "latest")("fraud")


def test_lineage_panel_shows_parent_fingerprint_and_aliases(home):
    from serving.dashboard.sources import lineage

    models, offline, plan = home
    registry = ModelRegistry(models)
    Retrainer(registry, DeploymentStore(models), offline, models).start(plan)
    rows = lineage(registry)()
    assert [r["version"] for r in rows] == ["2", "1"]
    assert rows[0]["parent"] == "1" and rows[0]["training_set"].startswith("blake2b:")
    assert rows[1]["aliases"] == ["champion"] and rows[1]["parent"] is None
    assert set(rows[0]["metrics"]) == {"auc", "logloss"}


def test_audit_panel_merges_registry_alias_moves_and_spec_revisions(home):
    from serving.dashboard.data import DashboardData, audit_files
    from serving.dashboard.routes import render

    models, offline, plan = home
    registry = ModelRegistry(models)
    Retrainer(registry, DeploymentStore(models), offline, models).start(plan)
    page = render(DashboardData(audit=audit_files(models)).snapshot(), "/ui/static")
    assert "alias champion → v1" in page  # the registry's audit.jsonl
    assert "revision 2: champion v1; shadows v2" in page  # the deployment spec's


def test_default_lookup_prefers_the_registry_then_reference_files(home, tmp_path):
    from features.settings import Settings
    from serving.dashboard.sources import from_settings
    from serving.monitoring.errors import MonitorError
    from serving.monitoring.sources import ReferenceFiles, default_lookup

    models, _, _ = home
    registry = ModelRegistry(models)
    ReferenceFiles(models).save("other", "7", registry_lookup_target(registry).reference)
    lookup = default_lookup(models)
    assert lookup("fraud").version == "1"  # from the registry metadata
    assert lookup("other").version == "7"  # from the reference file
    with pytest.raises(MonitorError, match="no reference"):
        lookup("nope")
    rows = from_settings(Settings(home=tmp_path), registry=registry).snapshot()
    assert [m["model"] for m in rows["monitors"]["rows"]] == ["fraud", "other"]
    assert [r["version"] for r in rows["lineage"]["rows"]] == ["1"]


def registry_lookup_target(registry):
    from serving.monitoring.sources import registry_lookup

    return registry_lookup(registry)("fraud")


def test_mount_adds_ui_and_monitor_routes_with_the_scorers_own_metrics(home, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from features.settings import Settings
    from serving.dashboard.sources import mount
    from serving.scorer.metrics import PREDICTIONS

    models, _, _ = home
    PREDICTIONS.labels("fraud", "1").inc(5)
    # the registry lives elsewhere than the home folder (e.g. TESSERA_MODELS_URI)
    app = mount(FastAPI(), Settings(home=tmp_path / "home"), registry=ModelRegistry(models))
    client = TestClient(app)
    snap = client.get("/ui/data.json").json()
    names = [r["name"] for r in snap["throughput"]["rows"]]
    assert "tessera_predictions{model=fraud,version=1}" in names
    assert client.get("/ui").status_code == 200
    r = client.get("/v1/monitor/fraud").json()
    assert r["version"] == "1" and r["rows"] == 0 and r["status"] == "ok"


def test_a_promotion_the_old_champion_beats_on_probation_is_rolled_back(home):
    models, offline, plan = home
    registry, store = ModelRegistry(models), DeploymentStore(models)
    r = Retrainer(registry, store, offline, models)
    state = r.start(plan)
    write_log(offline, store.current("fraud"), {"1": 1.5, "2": 0.5})
    assert r.decide("fraud", state["run"])["step"] == "promoted"
    assert store.current("fraud").shadows == ("1",)
    # live traffic after the promotion: v1, now the shadow, does better than v2
    preds, outcomes = simulate_log(
        store.current("fraud"), 20_000, {"2": 1.5, "1": 0.5}, labelled=0.5, seed=9
    )
    later = pl.col("request_id").str.replace("^r", "after-")  # ids unlike the first log's
    for folder, frame in zip(dataset_dirs(offline), (preds, outcomes), strict=True):
        import_frame(folder, frame.with_columns(later))
    done = r.decide("fraud", state["run"])
    assert done["step"] == "rolled_back" and "worse than v1" in done["reason"]
    assert registry.resolve("fraud", "champion") == "1"
    assert store.current("fraud").champion == "1"
    assert r.decide("fraud", state["run"])["step"] == "rolled_back"  # and stays so
