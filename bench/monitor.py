"""Monitoring benchmark: drift detection delay, false alarms, and report time.

    .venv/bin/python bench/monitor.py [--quick]

1. Detection delay: a stream of synthetic predictions (``serving.monitoring.simulate``) whose
   ``amount`` feature shifts by ``shift`` standard deviations at a known prediction; the
   monitor slides a window of ``W`` predictions in steps of ``W / 20`` and the delay is the
   number of predictions between the onset and the end of the first window that alerts (an
   alert = PSI >= 0.2 and KS p < 0.01 / columns). Reported per (W, shift) over seeds: median and
   max delay in predictions and in windows, and the share of seeds detected within 2 W.
2. False alarms: undrifted windows per W, default thresholds; the count of windows with any alert.
3. Report time: one report over W predictions of a 30-feature model read from the prediction
   log's shape (feature vector as a list column): expand + PSI + KS + quality checks.

``--quick`` uses fewer seeds. Writes ``bench/results/monitor.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.monitoring.drift import drift_report  # noqa: E402
from serving.monitoring.reference import build_reference  # noqa: E402
from serving.monitoring.report import expand_features, monitor_report  # noqa: E402
from serving.monitoring.simulate import draw, reference_columns  # noqa: E402


def detection(reference, window: int, shift: float, seeds: int) -> dict:
    step = max(1, window // 20)
    onset = 2 * window
    total = onset + 3 * window
    delays = []
    for seed in range(seeds):
        rng = np.random.default_rng(10_000 + seed)
        a, b = draw(rng, onset), draw(rng, total - onset, shift=shift)
        stream = {k: np.concatenate([a[k], b[k]]) for k in a}
        delay = None
        for end in range(onset + step, total + 1, step):
            cols = {k: v[end - window : end] for k, v in stream.items()}
            if any(c.drifted for c in drift_report(cols, reference)):
                delay = end - onset
                break
        delays.append(delay)
    found = [d for d in delays if d is not None]
    return {
        "window": window,
        "shift_sd": shift,
        "seeds": seeds,
        "detected_share": len(found) / seeds,
        "within_2w_share": sum(d <= 2 * window for d in found) / seeds,
        "median_delay_predictions": statistics.median(found) if found else None,
        "max_delay_predictions": max(found) if found else None,
        "median_delay_windows": statistics.median(found) / window if found else None,
    }


def false_alarms(reference, window: int, seeds: int) -> dict:
    alarms = 0
    for seed in range(seeds):
        cols = draw(np.random.default_rng(50_000 + seed), window)
        alarms += any(c.alerts for c in drift_report(cols, reference))
    return {"window": window, "windows": seeds, "false_alarm_windows": alarms}


def report_time(window: int, features: int = 30, repeats: int = 5) -> dict:
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(features)]
    train = {n: rng.normal(size=20_000) for n in names}
    ref = build_reference(train, rng.random(20_000))
    vec = rng.normal(size=(window, features))
    log = pl.DataFrame(
        {"ts": np.arange(window), "score": rng.random(window), "features": vec.tolist()}
    )
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        monitor_report("m", expand_features(log, names), ref)
        times.append(time.perf_counter() - t)
    return {"window": window, "features": features, "median_ms": 1000 * statistics.median(times)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    seeds = 10 if args.quick else 40
    cols = reference_columns()
    score = cols.pop("score")
    reference = build_reference(cols, score)
    t0 = time.perf_counter()
    delays = [
        detection(reference, w, s, seeds) for w in (500, 1000, 2000) for s in (0.25, 0.5, 1.0)
    ]
    alarms = [false_alarms(reference, w, 5 * seeds) for w in (500, 1000, 2000)]
    timings = [report_time(w) for w in (1000, 10_000, 100_000)]
    out = {
        "quick": args.quick,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "thresholds": {"psi": 0.2, "alpha": 0.01, "min_rows": 200},
        "step": "window / 20",
        "detection": delays,
        "false_alarms": alarms,
        "report_time": timings,
        "wall_s": time.perf_counter() - t0,
    }
    path = ROOT / "bench" / "results" / "monitor.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))

    print(f"{'window':>7}{'shift sd':>9}{'detected':>9}{'<=2W':>7}{'median':>9}{'max':>8}")
    for d in delays:
        med = d["median_delay_predictions"]
        print(
            f"{d['window']:>7}{d['shift_sd']:>9}{d['detected_share']:>9.2f}"
            f"{d['within_2w_share']:>7.2f}{'-' if med is None else int(med):>9}"
            f"{'-' if d['max_delay_predictions'] is None else d['max_delay_predictions']:>8}"
        )
    for a in alarms:
        print(f"false alarms, W={a['window']}: {a['false_alarm_windows']}/{a['windows']} windows")
    for t in timings:
        print(
            f"report over {t['window']:>7} predictions x {t['features']} features: "
            f"{t['median_ms']:.1f} ms"
        )
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
