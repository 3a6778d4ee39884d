"""Review gates at register and at promotion: pass, fail, override with an audited reason,
per-segment checks; every promotion path (alias, experiment promote) goes through them."""

import json

import pytest

from features.errors import RegistryError
from serving.experiments.promote import promote, rollback
from serving.experiments.spec import DeploymentSpec, DeploymentStore
from serving.registry import ModelRegistry
from serving.registry.errors import GateFailed
from serving.registry.gates import GatedAliasSetter, GatePolicy, evaluate
from serving.registry.training import train
from tests.serving.registry.helpers import write_segmented_set

FAST = {"num_iterations": 30, "num_leaves": 7}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """fraud v1 = good everywhere (champion), v2 = noise, v3 = good on A only, v4 = v1's data
    but one weak feature."""
    tmp = tmp_path_factory.mktemp("gates")
    reg = ModelRegistry(tmp / "models")
    for i, kw in enumerate(({"noisy": "none"}, {"shuffle_all": True}, {"noisy": "B"})):
        path = tmp / f"t{i}.parquet"
        write_segmented_set(path, seed=i, **kw)
        res = train(path, "label", params=FAST, segments=["country"])
        reg.register("fraud", res.model_text, res.metadata(), holdout=res.holdout)
    res = train(tmp / "t0.parquet", "label", ["v:x2"], params=FAST)
    reg.register("fraud", res.model_text, res.metadata(), holdout=res.holdout)
    reg.set_alias("fraud", "champion", "1", who="ann", why="first")
    return reg, tmp


def test_good_model_passes_and_result_is_stored(world):
    reg, _ = world
    entry = reg.audit("fraud")[-1]
    assert entry["gates"] == {"passed": True, "failed": []} and "override" not in entry
    hist = reg.gate_history("fraud", "1")
    assert hist[-1]["stage"] == "promote" and hist[-1]["passed"]
    checks = {c["check"]: c for c in hist[-1]["checks"]}
    assert checks["min_auc"]["passed"] and checks["min_auc"]["value"] > 0.75
    assert checks["max_calibration_error"]["passed"]
    assert checks["max_auc_drop"]["passed"] is None  # no champion before v1


def test_failing_model_is_refused_then_overridden_with_audit(world, monkeypatch):
    reg, _ = world
    monkeypatch.setenv("LOGNAME", "bob")  # the OS user getpass reports
    with pytest.raises(GateFailed, match="fraud v2 fails its review gates: min_auc") as e:
        reg.set_alias("fraud", "champion", "2", why="try")
    failed = set(e.value.report["failed"])
    assert "min_auc" in failed
    # v4 is fine on its own (AUC above the minimum) but far below the champion on its rows
    with pytest.raises(GateFailed) as e4:
        reg.set_alias("fraud", "champion", "4", why="try")
    assert e4.value.report["failed"] == ["max_auc_drop"]
    drop = next(c for c in e4.value.report["checks"] if c["check"] == "max_auc_drop")
    assert drop["value"] > 0.1 and "champion v1" in drop["detail"]
    assert reg.aliases("fraud")["champion"] == "1"
    with pytest.raises(RegistryError, match="--override needs --why"):
        reg.set_alias("fraud", "champion", "2", override=True, why=" ")
    entry = reg.set_alias("fraud", "champion", "2", override=True, why="incident 42: need it")
    assert reg.aliases("fraud")["champion"] == "2"
    last = reg.audit("fraud")[-1]
    assert last == entry and last["override"] is True and last["who"] == "os:bob"
    assert last["why"] == "incident 42: need it" and last["when"].endswith("Z")
    assert set(last["gates"]["failed"]) == failed and last["gates"]["passed"] is False
    assert reg.gate_history("fraud", "2")[-1]["override"] is True
    # a challenger alias is not a promotion: not gated; moving back to v1 is gated and passes
    assert "gates" not in reg.set_alias("fraud", "challenger", "2", why="watch it")
    assert reg.set_alias("fraud", "champion", "1", why="back")["gates"]["passed"]


def test_segment_gate(world):
    reg, tmp = world
    policy = GatePolicy(max_auc_drop=None, segment="country", max_segment_gap=0.1,
                        min_segment_auc=0.6)
    good = evaluate(policy, {}, reg.holdout("fraud", "1"))
    assert good["passed"], good
    bad = evaluate(policy, {}, reg.holdout("fraud", "3"))
    assert set(bad["failed"]) == {"max_segment_gap", "min_segment_auc"}
    by = next(c for c in bad["checks"] if c["check"] == "segments")["value"]
    assert by["A"] > 0.75 and by["B"] < 0.6  # worse on one segment only
    assert bad["checks"][0]["passed"]  # the overall AUC alone would have passed
    # the policy file applies to promotions; a version without that column fails the check
    (tmp / "pol.json").write_text(json.dumps(policy.to_dict()))
    reg.set_gate_policy("fraud", policy)
    with pytest.raises(GateFailed, match="max_segment_gap"):
        reg.set_alias("fraud", "champion", "3", why="segment test")
    no_segments = GatePolicy(segment="region", max_segment_gap=0.1)
    r = evaluate(no_segments, {}, reg.holdout("fraud", "1"))
    assert r["failed"] == ["max_segment_gap"] and "--segment region" in r["checks"][-1]["detail"]
    with pytest.raises(RegistryError, match="unknown gate policy keys"):
        GatePolicy.from_dict({"min_acu": 0.7})
    with pytest.raises(RegistryError, match="'min_auc' must be a number or null, got '0.7'"):
        GatePolicy.from_dict({"min_auc": "0.7"})
    with pytest.raises(RegistryError, match="need 'segment'"):
        GatePolicy.from_dict({"max_segment_gap": 0.1})
    reg.storage.write_bytes("fraud/gate_policy.json", b"{}")


def test_experiment_promote_is_gated_before_any_revision(world):
    reg, tmp = world
    store = DeploymentStore(tmp / "models")
    reg.set_alias("fraud", "champion", "1", why="reset")
    store.save(DeploymentSpec("fraud", "1", shadows=("2",)), why="shadow v2")
    rev = store.revision("fraud")
    with pytest.raises(GateFailed):
        promote(store, "fraud", "2", set_alias=GatedAliasSetter(reg, "promote v2"))
    assert store.revision("fraud") == rev and reg.aliases("fraud")["champion"] == "1"
    with pytest.raises(RegistryError, match="needs --why"):
        promote(store, "fraud", "2", set_alias=GatedAliasSetter(reg, "", override=True))
    s = promote(store, "fraud", "2", why="override drill",
                set_alias=GatedAliasSetter(reg, "override drill", override=True))
    assert s.champion == "2" and reg.aliases("fraud")["champion"] == "2"
    assert reg.audit("fraud")[-1]["override"] is True
    # a rollback restores the previous champion without gates, and says so
    rollback(store, "fraud", set_alias=GatedAliasSetter(reg, "rollback", gate=False))
    assert reg.aliases("fraud")["champion"] == "1"
    assert reg.audit("fraud")[-1]["gates"] == "skipped"
