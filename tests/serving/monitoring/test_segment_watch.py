"""The monitor alerts when one segment degrades while the total does not, and resolves it."""

import numpy as np
import polars as pl

from serving.monitoring.alerts import Alerter
from serving.monitoring.watch import MonitorWatch, SegmentWatch

from .webhook import capture_posts

COUNTRIES = np.array(["de", "fr", "us", "us", "us", "us", "us", "us"])  # fr: 1/8 of traffic


def labelled_log(n: int, seed: int, bad_from: int | None = None, t0: int = 0) -> pl.DataFrame:
    """Labelled champion predictions by country; from row ``bad_from`` on, the model's scores
    for fr are unrelated to the risk (a synthetic model worse on one segment only)."""
    rng = np.random.default_rng(seed)
    country = COUNTRIES[rng.integers(0, COUNTRIES.size, n)]
    risk = rng.normal(size=n)
    y = rng.random(n) < 1 / (1 + np.exp(-(risk - 1.0)))
    seen = risk + rng.normal(scale=0.5, size=n)
    if bad_from is not None:
        bad = (np.arange(n) >= bad_from) & (country == "fr")
        seen = np.where(bad, rng.normal(size=n), seen)
    return pl.DataFrame(
        {
            "ts": t0 + np.arange(n, dtype=np.int64) * 1000,
            "country": country,
            "label": y.astype(float),
            "score": 1 / (1 + np.exp(-(seen - 1.0))),
        }
    )


def test_one_degraded_segment_alerts_once_while_the_total_holds_then_resolves():
    frames = {"log": labelled_log(8000, 1)}
    with capture_posts() as (url, received):
        sw = SegmentWatch("fraud", lambda: frames["log"], "country", window=4000, version="3")
        watch = MonitorWatch(lambda: [], None, lambda: pl.DataFrame(), Alerter(url), segments=(sw,))
        healthy = watch.check_once()
        assert healthy == {} and watch.last_segments[("fraud", "country")]["alerts"] == []
        # fr turns bad in the newest 4000 rows
        frames["log"] = labelled_log(8000, 1, bad_from=4000)
        for _ in range(2):  # two rounds: raised once, not twice
            watch.check_once()
        result = watch.last_segments[("fraud", "country")]
        auc = next(a for a in result["alerts"] if a["metric"] == "auc")
        assert auc["segment"] == "fr" and auc["change"] > 0.1
        assert abs(auc["total_change"]) <= 0.02  # the total barely moved
        assert {a["segment"] for a in result["alerts"]} == {"fr"}
        now = {r["segment"]: r for r in result["now"]["segments"]}
        assert now["fr"]["auc"] < now["us"]["auc"] - 0.1
        # the model recovers: fr's newest rows are healthy again, the alert resolves
        frames["log"] = pl.concat([frames["log"], labelled_log(8000, 2, t0=10**9)])
        watch.check_once()
    events = [e for body in received for e in body["alerts"]]
    states = [(e["column"], e["kind"], e["state"]) for e in events]
    assert states.count(("country=fr", "segment_auc", "raised")) == 1
    assert ("country=fr", "segment_auc", "resolved") in states
    assert all(e["model"] == "fraud" and e["version"] == "3" for e in events)


def test_too_few_labels_waits_without_alerting():
    sw = SegmentWatch("fraud", lambda: labelled_log(300, 3), "country", window=4000)
    out = sw.check(Alerter())
    assert out["alerts"] == [] and "baseline needs" in out["waiting"]


def test_segment_watch_reads_the_logged_predictions_and_a_segment_lookup(tmp_path):
    from serving.experiments.report import dataset_dirs, labelled_predictions
    from serving.experiments.simulate import simulate_log
    from serving.experiments.sink import import_frame
    from serving.experiments.spec import DeploymentSpec

    spec = DeploymentSpec("fraud", "1")
    preds, outcomes = simulate_log(spec, 16_000, {"1": 0.5}, labelled=1.0, seed=6)
    keys = preds["entity_key"].unique().sort()
    lookup = pl.DataFrame({"entity_key": keys, "country": COUNTRIES[np.arange(keys.len()) % 8]})
    fr = lookup.filter(pl.col("country") == "fr")["entity_key"].to_list()
    late = pl.col("ts") > preds["ts"].sort()[8000]
    noise = pl.Series(np.random.default_rng(1).random(preds.height))
    bad = late & pl.col("entity_key").is_in(fr)
    preds = preds.with_columns(pl.when(bad).then(noise).otherwise(pl.col("score")).alias("score"))
    for folder, frame in zip(dataset_dirs(tmp_path), (preds, outcomes), strict=True):
        import_frame(folder, frame)

    def labelled():
        return labelled_predictions(tmp_path, "fraud", segment_col="country", segments=lookup)

    assert labelled()["label"].is_not_null().sum() == 16_000
    out = SegmentWatch("fraud", labelled, "country", window=8000).check(Alerter())
    assert {a["column"] for a in out["alerts"]} == {"country=fr"}
    auc = next(a for a in out["alerts"] if a["metric"] == "auc")
    assert auc["change"] > 0.15 and auc["total_change"] < 0.05
