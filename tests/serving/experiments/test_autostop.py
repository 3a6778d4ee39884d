"""Statistical guardrails act on the report: stop, retire, roll back, with audit and alerts."""

import json
import logging
from dataclasses import replace

import polars as pl

from serving.experiments.autostop import WHO, enforce
from serving.experiments.promote import promote
from serving.experiments.report import build_report, dataset_dirs
from serving.experiments.simulate import simulate_log
from serving.experiments.sink import import_frame
from serving.experiments.spec import Arm, DeploymentSpec, DeploymentStore
from serving.monitoring.alerts import Alerter
from serving.monitoring.watch import ExperimentGuard, MonitorWatch


def report_for(store, name, noise, seed=0, n=8000, errors_in_arm=0.0):
    spec = store.current(name)
    preds, outcomes = simulate_log(spec, n, noise, labelled=0.5, seed=seed)
    if errors_in_arm:
        fail = (pl.col("role") == "arm") & (
            pl.col("request_id").hash(seed) % 100 < 100 * errors_in_arm
        )
        preds = preds.with_columns(
            pl.when(fail).then(pl.lit("RuntimeError: boom")).otherwise(None).alias("error")
        )
    return build_report(preds, outcomes, spec, reps=0), preds, outcomes


def test_worse_arm_and_worse_shadow_are_stopped_with_audit_and_alert(tmp_path, caplog):
    store = DeploymentStore(tmp_path)
    store.save(DeploymentSpec("fraud", "1", arms=(Arm("b", "2", 0.3),), shadows=("3", "4")))
    # v2 (arm) and v3 (shadow) are truly worse; v4 as good as the champion
    r, _, _ = report_for(store, "fraud", {"1": 0.5, "2": 1.5, "3": 1.5, "4": 0.5})
    caplog.set_level(logging.WARNING)
    actions = enforce(store, r, notify=Alerter().action)
    assert [(a["action"], a["version"]) for a in actions] == [
        ("arm_stopped", "2"),
        ("shadow_retired", "3"),
    ]
    spec = store.current("fraud")
    assert spec.arm("b").stopped.startswith("sequential test: the arm is worse")
    assert spec.shadows == ("4",) and spec.live_arms == ()
    audit = store.audit_log("fraud")
    assert [e["who"] for e in audit[-2:]] == [WHO, WHO]
    assert "stopped b" in audit[-2]["why"] and "retired shadow v3" in audit[-1]["why"]
    logged = [json.loads(m.getMessage()) for m in caplog.records if m.name == "tessera.monitor"]
    assert [e["action"] for e in logged] == ["arm_stopped", "shadow_retired"]
    # acting again on the same evidence changes nothing
    assert (
        enforce(
            store,
            build_report(
                *report_for(store, "fraud", {"1": 0.5, "4": 0.5})[1:],
                store.current("fraud"),
                reps=0,
            ),
        )
        == []
    )


def test_arm_breaking_the_error_guardrail_is_stopped_even_when_its_scores_are_fine(tmp_path):
    store = DeploymentStore(tmp_path)
    store.save(DeploymentSpec("fraud", "1", arms=(Arm("b", "2", 0.3),)))
    r, _, _ = report_for(store, "fraud", {"1": 1.0, "2": 1.0}, errors_in_arm=0.2)
    actions = enforce(store, r)
    assert [a["action"] for a in actions] == ["arm_stopped"]
    assert "error rate" in store.current("fraud").arm("b").stopped


def test_a_promoted_champion_worse_than_the_one_it_replaced_is_rolled_back(tmp_path):
    store = DeploymentStore(tmp_path)
    store.save(DeploymentSpec("fraud", "1", shadows=("2",)))
    moved = []
    promote(store, "fraud", "2", why="looked good", set_alias=lambda *a: moved.append(a))
    assert store.current("fraud").shadows == ("1",)  # the previous champion, on probation
    # on live traffic the new champion v2 turns out worse than v1
    r, _, _ = report_for(store, "fraud", {"2": 1.5, "1": 0.5}, seed=4)
    events = []
    actions = enforce(store, r, set_alias=lambda *a: moved.append(a), notify=events.append)
    assert [a["action"] for a in actions] == ["champion_rolled_back"]
    assert actions[0]["version"] == "2" and actions[0]["restored"] == "1"
    spec = store.current("fraud")
    assert spec.champion == "1" and spec.shadows == ()
    assert moved[-1] == ("fraud", "champion", "1") and events == actions
    assert "worse than v1" in store.audit_log("fraud")[-2]["why"]


def test_a_promoted_champion_that_proves_better_ends_its_probation(tmp_path):
    store = DeploymentStore(tmp_path)
    store.save(DeploymentSpec("fraud", "1", shadows=("2",)))
    promote(store, "fraud", "2")
    r, _, _ = report_for(store, "fraud", {"2": 0.5, "1": 1.5}, seed=5)
    assert [a["action"] for a in enforce(store, r)] == ["probation_passed"]
    spec = store.current("fraud")
    assert spec.champion == "2" and spec.shadows == ()


def test_the_monitor_watch_runs_the_guardrails_from_the_logged_data(tmp_path):
    models, offline = tmp_path / "models", tmp_path / "offline"
    store = DeploymentStore(models)
    store.save(DeploymentSpec("fraud", "1", arms=(Arm("b", "2", 0.3),)))
    preds, outcomes = simulate_log(store.current("fraud"), 8000, {"1": 0.5, "2": 1.5}, 0.5)
    for folder, frame in zip(dataset_dirs(offline), (preds, outcomes), strict=True):
        import_frame(folder, frame)
    guard = ExperimentGuard(models, offline, lambda: ["fraud", "nodeploy"])
    watch = MonitorWatch(lambda: [], None, lambda: pl.DataFrame(), Alerter(), guard=guard)
    watch.check_once()
    assert [a["action"] for a in watch.last_actions["fraud"]] == ["arm_stopped"]
    assert store.current("fraud").live_arms == ()
    watch.check_once()
    assert not any(watch.last_actions.values())  # nothing new: nothing announced twice
    # a scorer's online guardrail stops a new arm (as ExperimentRouter.stop_arm does): the
    # guard turns that audited revision into an alert too
    spec = store.current("fraud")
    store.save(
        replace(spec, arms=(*spec.arms, Arm("c", "3", 0.1, stopped="p99 60 ms"))),
        why="stopped c: p99 60 ms",
        who="guardrail",
    )
    watch.check_once()
    [event] = watch.last_actions["fraud"]
    assert (event["action"], event["by"], event["arm"]) == ("arm_stopped", "online guardrail", "c")
