"""What the review gates and the outcome route cost.

    .venv/bin/python bench/gates.py [--quick]

1. A 300-tree champion and a candidate trained on ``--rows`` rows (20 % holdout, kept up to
   50,000 rows): the size of the stored ``holdout.parquet``, and the time of one promotion check
   (``ModelRegistry.check_gates``: read the holdout, score the champion on it, every check), as
   the median of 5.
2. ``Outcomes.record`` (what ``POST /v1/outcomes`` runs) against a real redis-server with the
   Parquet outcome log: median seconds per request of 1 and of 1000 outcomes, and per outcome.

Writes ``bench/results/gates.json`` and prints a table. Starts its own redis-server.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.http.outcome_log import ParquetOutcomeLog  # noqa: E402
from serving.http.outcomes import Outcomes  # noqa: E402
from serving.registry import ModelRegistry  # noqa: E402
from serving.registry.training import train  # noqa: E402


def training_set(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12))
    y = (rng.random(n) < 1 / (1 + np.exp(-(x[:, 0] - x[:, 1] + 0.5 * x[:, 2])))).astype(int)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    cols = {f"v__f{j}": x[:, j] for j in range(12)}
    pq.write_table(pa.table({
        "ts": pa.array([start + timedelta(seconds=i) for i in range(n)],
                       pa.timestamp("us", tz="UTC")),
        **cols, "country": np.where(rng.random(n) < 0.5, "A", "B"), "label": y}), path)


def median_s(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, default=250_000)
    args = ap.parse_args()
    rows = 20_000 if args.quick else args.rows
    rounds = 50 if args.quick else 300
    from tessera.local import start_redis, stop

    out: dict = {"rows": rows, "trees": rounds, "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reg = ModelRegistry(tmp / "models")
        for seed in (1, 2):
            training_set(tmp / f"t{seed}.parquet", rows, seed)
            res = train(tmp / f"t{seed}.parquet", "label", params={"num_iterations": rounds},
                        seed=seed, segments=["country"])
            reg.register("m", res.model_text, res.metadata(), holdout=res.holdout)
        reg.set_alias("m", "champion", "1", why="bench")
        out["holdout_rows_stored"] = reg.holdout("m", "2").num_rows
        out["holdout_parquet_bytes"] = (tmp / "models/m/versions/2/holdout.parquet").stat().st_size
        out["model_txt_bytes"] = (tmp / "models/m/versions/2/model.txt").stat().st_size
        out["check_gates_s"] = median_s(lambda: reg.check_gates("m", "2", override=True,
                                                                why="bench"), 5)

        proc, url = start_redis(tmp / "redis")
        try:
            import redis

            client = redis.Redis.from_url(url)
            outcomes = Outcomes(None, ParquetOutcomeLog(tmp / "outcomes"), client)
            counter = iter(range(10**9))

            def body(k: int) -> bytes:
                items = b", ".join(b'{"request_id": "r%d", "label": 1}' % next(counter)
                                   for _ in range(k))
                return b'{"outcomes": [%s]}' % items

            reps = 20 if args.quick else 100
            one = [body(1) for _ in range(reps)]
            big = [body(1000) for _ in range(reps // 10)]
            out["record_1_s"] = median_s(lambda: outcomes.record(one.pop()), reps)
            out["record_1000_s"] = median_s(lambda: outcomes.record(big.pop()), reps // 10)
            dup = body(1000)
            outcomes.record(dup)
            out["record_1000_duplicates_s"] = median_s(lambda: outcomes.record(dup), 5)
            client.close()
        finally:
            stop(proc)
    out["per_outcome_us_in_1000"] = out["record_1000_s"] / 1000 * 1e6
    path = ROOT / "bench/results/gates.json"
    path.write_text(json.dumps(out, indent=2))
    w = max(len(k) for k in out)
    for k, v in out.items():
        print(f"{k:<{w}}  {v:.4g}" if isinstance(v, float) else f"{k:<{w}}  {v}")


if __name__ == "__main__":
    main()
