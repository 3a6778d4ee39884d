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
