"""Aggregation kernels, one by one: what each job costs per aggregation.

    .venv/bin/python bench/kernels.py

Per registered aggregation (``features.semantics.aggregations``), the CPU time of

* ``fold_events``: 200k events into 20k tiles (the worker's batch fold), ns per event;
* ``merge_tiles``: 500 rings of 26 tiles, a 14-tile window (the online read of many
  entities), µs per ring; ``read_tiles``: the same ring by ring on Python tuples;
* ``reduce_ranges``: 100k ranges over 500k sorted events, 50 events each on average (training
  sets), ns per range.

Minimum of 5 repetitions of process CPU time (the machine is shared). A kernel left at the
base class's default (the scalar algebra element by element) shows here as a large figure.
Writes ``bench/results/kernels.json`` and prints a table.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.semantics.aggregations import AGGREGATIONS  # noqa: E402

REPS = 5


def best(fn) -> float:
    """Minimum CPU seconds of ``fn()`` over ``REPS`` runs."""
    out = float("inf")
    for _ in range(REPS):
        c = time.process_time()
        fn()
        out = min(out, time.process_time() - c)
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    n_ev, n_tiles = 200_000, 20_000
    inv = rng.integers(0, n_tiles, n_ev)
    ts = np.sort(rng.integers(0, 10**12, n_ev))
    seq = np.arange(n_ev)
    vals = np.round(rng.lognormal(3, 1, n_ev), 2)
    rows, slots, window = 500, 26, 14
    ring_v = rng.lognormal(3, 1, (rows, slots, 3))
    ring_v[:, :, 0] = rng.integers(1, 5, (rows, slots))  # counts, ts or n: positive
    mask = np.zeros((rows, slots), dtype=bool)
    mask[:, slots - window:] = True
    records = [[tuple(r) for r in ring_v[i, slots - window:]] for i in range(rows)]
    n_sorted, n_q = 500_000, 100_000
    sorted_vals = rng.lognormal(3, 1, n_sorted)
    lo = np.sort(rng.integers(0, n_sorted - 100, n_q))
    hi = lo + rng.integers(0, 100, n_q)
    result: dict = {"machine": "2 shared cores", "load_avg_1m_at_start":
                    round(os.getloadavg()[0], 2), "aggregations": {}}
    for name, agg in AGGREGATIONS.items():
        w = agg.width
        field = vals if agg.needs_field else None
        base = np.tile(np.array(agg.empty(), dtype=np.float64), (n_tiles, 1))

        def fold(base=base, agg=agg, field=field):
            agg.fold_events(base.copy(), inv, ts, seq, field)

        def merge(agg=agg, w=w):
            agg.finalize_list(agg.merge_tiles(ring_v[:, :, :w], mask)[0])

        def read(agg=agg):
            for r in records:
                agg.read_tiles(r, 0)

        def ranges(agg=agg):
            agg.reduce_ranges(sorted_vals if agg.needs_field else None, lo, hi)

        result["aggregations"][name] = {
            "fold_events_ns_per_event": round(best(fold) / n_ev * 1e9, 1),
            "merge_tiles_us_per_ring": round(best(merge) / rows * 1e6, 2),
            "read_tiles_us_per_ring": round(best(read) / rows * 1e6, 2),
            "reduce_ranges_ns_per_range": round(best(ranges) / n_q * 1e9, 1),
            "vector_min_rows": agg.vector_min_rows,
        }
    path = ROOT / "bench" / "results" / "kernels.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    cols = list(next(iter(result["aggregations"].values())))
    print(f"{'aggregation':12s}" + "".join(f"{c:>28s}" for c in cols))
    for name, row in result["aggregations"].items():
        print(f"{name:12s}" + "".join(f"{row[c]:>28}" for c in cols))


if __name__ == "__main__":
    main()
