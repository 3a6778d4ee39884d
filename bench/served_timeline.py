"""Benchmark: a training set "as served" next to the same one "as corrected".

    .venv/bin/python bench/served_timeline.py [--events 1000000] [--rows 200000] [--runs 7]

An event log (seed 1) of N events of 20k users over 7 days, each applied online 1 ms-2 s after
its event time, 5% backdated (applied up to 8 min later) and 2% late (never applied); a spine
of M rows at random times. Builds three windowed features (count/sum/last over 10 min) in
both timelines, alternating, in one process; reports the median wall time of each, their
ratio, and how many rows differ. Writes ``bench/results/served_timeline.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from features import Aggregate, Entity, EventSource, FeatureRepo, FeatureView
from features.offline.event_log import TS_TYPE, EventLog
from features.offline.served import NEVER_US
from features.offline.training_set import build_training_set
from features.settings import Settings

M = 60_000_000
T0 = 1_772_323_200_000_000  # 2026-03-01 UTC
user = Entity("user", ["user_id"])
SOURCE = EventSource("buys", {"user_id": "string", "amount": "float", "ts": "timestamp"},
                     timestamp_field="ts", entity=user)
VIEW = FeatureView("v", SOURCE, [Aggregate("count", ["10m"]),
                                 Aggregate("sum", ["10m"], field="amount"),
                                 Aggregate("last", ["10m"], field="amount")])
REPO = FeatureRepo.of([VIEW])
REFS = ["v:count_10m", "v:amount_sum_10m", "v:amount_last_10m"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    n, week = args.events, 7 * 24 * 60 * M
    ts = T0 + rng.integers(0, week, n)
    lag = rng.integers(1_000, 2_000_000, n)
    back = rng.random(n) < 0.05
    lag[back] = rng.integers(0, 8 * M, int(back.sum()))
    applied = ts + lag
    applied[rng.random(n) < 0.02] = NEVER_US
    order = np.argsort(applied, kind="stable")  # the log's order: as the worker applied them
    home = Path(tempfile.mkdtemp(prefix="served-bench-"))
    EventLog(home / "offline").append(SOURCE, pa.table({
        "user_id": rng.integers(0, 20_000, n).astype(str)[order],
        "amount": rng.random(n)[order],
        "ts": pa.array(ts[order], TS_TYPE),
        "_offset": pa.array(np.arange(n), pa.int64()),
        "_ingest_ts": pa.array(np.minimum(applied, ts + 9 * M)[order] + 1, TS_TYPE),
        "_applied_ts": pa.array(applied[order], TS_TYPE)}), topic="buys", partition=0)
    spine = pl.DataFrame({"user_id": rng.integers(0, 20_000, args.rows).astype(str),
                          "ts": T0 + rng.integers(0, week, args.rows)}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")))
    settings = Settings(home)
    walls: dict[str, list[float]] = {"corrected": [], "served": []}
    frames = {}
    for _ in range(args.runs):
        for tl in walls:
            t = time.perf_counter()
            frames[tl] = build_training_set(spine, REFS, repo=REPO, settings=settings,
                                            timeline=tl).frame
            walls[tl].append(time.perf_counter() - t)
    c, s = frames["corrected"]["v__count_10m"], frames["served"]["v__count_10m"]
    out = {"events": n, "rows": args.rows, "runs": args.runs,
           "corrected_s": statistics.median(walls["corrected"]),
           "served_s": statistics.median(walls["served"]),
           "rows_differing_count_10m": int((c != s).sum())}
    out["ratio"] = out["served_s"] / out["corrected_s"]
    print(f"{'timeline':<10} {'median s':>9}  runs")
    for tl, v in walls.items():
        print(f"{tl:<10} {statistics.median(v):>9.3f}  {', '.join(f'{x:.2f}' for x in v)}")
    print(f"served / corrected: {out['ratio']:.2f}; rows whose count_10m differs: "
          f"{out['rows_differing_count_10m']} of {args.rows}")
    path = Path(__file__).parent / "results" / "served_timeline.json"
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
