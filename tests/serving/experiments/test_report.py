"""Outcome joining and the report on logs where the truth is known."""

import polars as pl
import pytest

from serving.experiments.join import join_outcomes
from serving.experiments.report import build_report, format_report
from serving.experiments.simulate import simulate_log
from serving.experiments.spec import Arm, DeploymentSpec

S = 1_000_000


def test_outcomes_join_by_request_or_entity_and_time_within_max_delay():
    preds = pl.DataFrame(
        {
            "request_id": ["a", "b", "c", "c", "d"],
            "ts": [0, 10 * S, 20 * S, 20 * S, 30 * S],
            "entity_key": ["u1", "u1", "u2", "u2", "u3"],
            "role": ["champion", "champion", "champion", "shadow", "arm"],
        }
    )
    outcomes = pl.DataFrame(
        {
            "request_id": ["a", None, None, "d"],
            "entity_key": [None, "u1", "u2", None],
            "ts": [5 * S, 12 * S, 21 * S, 200 * S],
            "label": [1.0, 0.0, 1.0, 1.0],
        }
    )
    out = join_outcomes(preds, outcomes, max_delay_s=60).sort("request_id", "role")
    # b gets u1's outcome at 12s (latest served prediction before it); c's shadow shares it;
    # d's label came 170 s late and does not count
    assert out["label"].to_list() == [1.0, 0.0, 1.0, 1.0, None]
    late_ok = join_outcomes(preds, outcomes, max_delay_s=1000).sort("request_id")
    assert late_ok.filter(pl.col("request_id") == "d")["label"].to_list() == [1.0]


def test_report_finds_the_better_shadow_and_arm():
    spec = DeploymentSpec(
        "fraud", "1", arms=(Arm("challenger", "2", 0.3),), shadows=("3", "4"), salt="x", revision=3
    )
    # v2 (arm) and v3 (shadow) are truly better; v4 is as good as the champion
    preds, outcomes = simulate_log(
        spec, 60_000, {"1": 1.5, "2": 0.5, "3": 0.5, "4": 1.5}, labelled=0.3, seed=1
    )
    r = build_report(preds, outcomes, spec, reps=50)
    c = r["champion"]
    assert c["predictions"] == pytest.approx(0.7 * 60_000, rel=0.05)
    assert c["labelled"] == pytest.approx(0.3 * c["predictions"], rel=0.05)
    assert [a["vs_champion"]["verdict"]["word"] for a in r["arms"]] == ["better"]
    words = {s["version"]: s["vs_champion"]["verdict"]["word"] for s in r["shadows"]}
    assert words["3"] == "better"
    assert words["4"] == "no difference yet"
    s4 = next(s for s in r["shadows"] if s["version"] == "4")["vs_champion"]
    assert s4["verdict"]["labels_needed"] > 0
    assert s4["paired_requests"] == c["predictions"]
    lo, hi = c["ci"]["auc"]
    assert lo < c["auc"] < hi
    # the anytime-valid decisions: better for the truly better ones, keep collecting for v4
    seq = {s["version"]: s["vs_champion"]["sequential"] for s in r["shadows"]}
    assert seq["3"]["decision"] == "better" and seq["4"]["decision"] == "keep collecting"
    assert r["arms"][0]["vs_champion"]["sequential"]["decision"] == "better"
    assert seq["3"]["decided_at"] < seq["3"]["labels"] == c["labelled"]
    path = seq["3"]["logloss"]["path"]
    assert [p[0] for p in path] == sorted(p[0] for p in path) and path[-1][0] == c["labelled"]
    assert any(p[0] == seq["3"]["decided_at"] and p[1] > 0 for p in path)
    lo, hi = seq["4"]["logloss"]["lower"], seq["4"]["logloss"]["upper"]
    assert lo < 0 < hi
    arm_seq = r["arms"][0]["vs_champion"]["sequential"]
    assert set(arm_seq) >= {"logloss", "accuracy"}  # the loss and the business metric
    assert r["shadows"][0]["vs_champion"]["verdict"]["kind"].startswith("fixed-horizon")
    text = format_report(r)
    assert "shadow v3: [anytime-valid] the challenger is better (decided at" in text
    assert "arm challenger v2 (live): [anytime-valid] the arm is better" in text
    assert "shadow v4: [anytime-valid] keep collecting" in text
    assert "fixed-horizon, one look only: the challenger is better" in text


def test_report_with_no_labels_says_so():
    spec = DeploymentSpec("fraud", "1", shadows=("2",))
    preds, outcomes = simulate_log(spec, 2000, {"1": 1.0, "2": 1.0}, labelled=0.0, seed=2)
    r = build_report(preds, outcomes, spec, reps=10)
    assert r["champion"]["labelled"] == 0 and r["champion"]["auc"] is None
    assert "not enough labelled data" in r["shadows"][0]["vs_champion"]["verdict"]["sentence"]


def test_arm_decided_on_a_conversion_outcome_the_models_do_not_change():
    # the arm's scores are better, but the outcome (the label, as a conversion) is drawn the
    # same way for everyone: deciding on the business metric must keep collecting
    spec = DeploymentSpec("fraud", "1", arms=(Arm("challenger", "2", 0.4),), salt="x")
    preds, outcomes = simulate_log(spec, 20_000, {"1": 1.5, "2": 0.5}, labelled=0.5, seed=4)
    r = build_report(preds, outcomes, spec, reps=0, business="positive_rate", decide_on="business")
    seq = r["arms"][0]["vs_champion"]["sequential"]
    assert seq["metric"] == "positive_rate" and seq["decision"] == "keep collecting"
    assert seq["logloss"]["decision"] == "better"  # the scores themselves are better
    lo, hi = seq["positive_rate"]["lower"], seq["positive_rate"]["upper"]
    assert lo < 0 < hi
