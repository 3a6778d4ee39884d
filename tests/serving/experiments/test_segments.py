"""Metrics by segment, with a synthetic model that is worse on one segment only."""

import numpy as np
import polars as pl
import pytest

from serving.experiments.errors import ExperimentError
from serving.experiments.report import build_report, format_report
from serving.experiments.segments import (
    calibration_error,
    segment_degradation,
    segment_metrics,
)
from serving.experiments.simulate import simulate_log
from serving.experiments.spec import DeploymentSpec

COUNTRIES = np.array(["de", "fr", "us", "us"])  # us is half of the traffic


def frame(n: int, seed: int, bad: str | None = None, noise: float = 0.5) -> pl.DataFrame:
    """Labelled scores by country; on ``bad`` the model's scores are unrelated to the risk."""
    rng = np.random.default_rng(seed)
    country = COUNTRIES[rng.integers(0, 4, n)]
    risk = rng.normal(size=n)
    y = rng.random(n) < 1 / (1 + np.exp(-(risk - 1.0)))
    seen = risk + rng.normal(scale=noise, size=n)
    if bad is not None:
        seen = np.where(country == bad, rng.normal(size=n), seen)
    return pl.DataFrame(
        {"country": country, "label": y.astype(float), "score": 1 / (1 + np.exp(-(seen - 1.0)))}
    )


def test_calibration_error_against_known_values():
    y = np.array([1, 0, 1, 0])
    assert calibration_error(y, np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.0)
    # two bins: scores 0.15 (all negatives) and 0.85 (all positives): |0.15 - 0| and |0.85 - 1|
    assert calibration_error(y, np.array([0.85, 0.15, 0.85, 0.15])) == pytest.approx(0.15)


def test_segment_metrics_find_the_one_bad_segment_and_the_gap():
    m = segment_metrics(frame(20_000, 1, bad="fr"), "country")
    by = {r["segment"]: r for r in m["segments"]}
    assert set(by) == {"de", "fr", "us"} and by["us"]["labelled"] > by["fr"]["labelled"]
    assert by["fr"]["auc"] == pytest.approx(0.5, abs=0.03)
    assert by["de"]["auc"] > 0.65 and by["us"]["auc"] > 0.65
    assert m["worst"]["auc"] == "fr" and m["gap"]["auc"] > 0.2
    assert m["total"]["labelled"] == 20_000
    good = segment_metrics(frame(20_000, 1), "country")
    assert good["gap"]["auc"] < 0.03
    small = segment_metrics(frame(120, 2), "country", min_labelled=50)
    assert [r["judged"] for r in small["segments"]] == [False, False, True]
    with pytest.raises(ExperimentError, match="no column 'region'"):
        segment_metrics(frame(10, 1), "region")


def test_degradation_on_one_segment_alerts_while_the_total_holds():
    base = segment_metrics(frame(40_000, 3), "country")
    # de and fr are a quarter of the traffic each; fr turns bad
    now = segment_metrics(frame(40_000, 4, bad="fr"), "country")
    alerts = segment_degradation(now, base, max_auc_drop=0.05, total_tolerance=0.2)
    assert {a.segment for a in alerts} == {"fr"} and "auc" in {a.metric for a in alerts}
    auc = next(a for a in alerts if a.metric == "auc")
    assert auc.change > 0.15 and auc.column == "country=fr" and auc.total_change < auc.change
    assert segment_degradation(segment_metrics(frame(40_000, 5), "country"), base) == []
    # if the total degraded as much, it is the whole model's drift, not a segment alert
    assert segment_degradation(now, base, total_tolerance=0.01) == []
    everywhere = segment_metrics(frame(40_000, 6, noise=3.0), "country")  # every segment worse
    assert everywhere["total"]["auc"] < base["total"]["auc"] - 0.05
    assert segment_degradation(everywhere, base) == []


def test_report_by_segment_shows_the_worse_shadow_segment():
    spec = DeploymentSpec("fraud", "1", shadows=("2",))
    preds, outcomes = simulate_log(spec, 30_000, {"1": 0.5, "2": 0.5}, labelled=0.5, seed=3)
    keys = preds["entity_key"].unique().sort()
    lookup = pl.DataFrame({"entity_key": keys, "country": COUNTRIES[np.arange(keys.len()) % 4]})
    # the shadow is as good as the champion except for fr, where its scores are noise
    fr = set(lookup.filter(pl.col("country") == "fr")["entity_key"].to_list())
    rng = np.random.default_rng(0)
    noise = pl.Series(rng.random(preds.height))
    bad = (pl.col("role") == "shadow") & pl.col("entity_key").is_in(list(fr))
    preds = preds.with_columns(pl.when(bad).then(noise).otherwise(pl.col("score")).alias("score"))
    r = build_report(preds, outcomes, spec, reps=0, segment_col="country", segments=lookup)
    champ, shadow = r["champion"]["segments"], r["shadows"][0]["segments"]
    assert champ["gap"]["auc"] < 0.05
    assert shadow["worst"]["auc"] == "fr" and shadow["gap"]["auc"] > 0.15
    text = format_report(r)
    assert "shadow v2 by country: de AUC" in text and "gap between segments: AUC" in text
