"""Experiments benchmark: shadow overhead on the champion's latency, and report time.

    .venv/bin/python bench/experiments.py [--quick]

1. Champion latency with 0, 1 and 2 shadows at the same paced load: real 300-tree LightGBM
   boosters behind ``ExperimentRouter``, every prediction logged to a real Kafka-protocol
   broker (started here unless ``KAFKA_BOOTSTRAP`` is set). The three configurations run
   interleaved in rounds so machine noise hits them alike. The serving layer's scorer is not
   used: this measures the router's in-process champion path (assignment + predict + log put +
   shadow put), which is what shadows could slow down.
2. Report time for 1M logged predictions with 200k labels, read from Parquet files laid out as
   the sink writes them (read + join + metrics + tests + 200-replicate bootstraps).

``--quick`` runs both at a tenth of the size and writes the same keys (plus ``scale``).
Writes ``bench/results/experiments.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.experiments.kafka_log import KafkaRecordLog, delete_topics, ensure_topics  # noqa: E402
from serving.experiments.report import dataset_dirs, experiment_report  # noqa: E402
from serving.experiments.router import ExperimentRouter  # noqa: E402
from serving.experiments.simulate import simulate_log  # noqa: E402
from serving.experiments.spec import Arm, DeploymentSpec, DeploymentStore  # noqa: E402

N_FEATURES = 30
TREES = 300


def train(seed: int) -> lgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(5000, N_FEATURES))
    y = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(size=5000) > 0).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": seed,
              "num_leaves": 31, "min_data_in_leaf": 5}
    return lgb.train(params, lgb.Dataset(x, y), num_boost_round=TREES)


def pace(router: ExperimentRouter, xs: np.ndarray, rate: float, offset: int) -> np.ndarray:
    """Score ``len(xs)`` requests at ``rate`` per second; returns per-request latency in ms."""
    lat = np.empty(len(xs))
    gap = 1.0 / rate
    nxt = time.perf_counter()
    for i, x in enumerate(xs):
        now = time.perf_counter()
        if now < nxt:
            time.sleep(nxt - now)
        nxt += gap
        t0 = time.perf_counter()
        router.score(f"user_id=u{offset + i}", x)
        lat[i] = (time.perf_counter() - t0) * 1000
    return lat


def shadow_overhead(bootstrap: str, requests: int, rounds: int, rate: float) -> dict:
    models = {v: train(seed) for seed, v in enumerate(("1", "2", "3"))}
    for b in models.values():  # warm LightGBM's single-row path
        b.predict(np.zeros((1, N_FEATURES)), num_threads=1)

    def predict(version: str, x: np.ndarray) -> np.ndarray:
        return models[version].predict(x, num_threads=1)

    topic = f"bench-predictions-{os.getpid()}"
    ensure_topics(bootstrap, [topic], partitions=4)
    log = KafkaRecordLog(bootstrap, topic)
    lat: dict[int, list[np.ndarray]] = {0: [], 1: [], 2: []}
    dropped = 0
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = DeploymentStore(tmp)
        for r in range(rounds):
            for k in (0, 1, 2):
                name = f"m{k}"
                if not store.revision(name):
                    store.save(DeploymentSpec(name, "1", shadows=("2", "3")[:k]))
                router = ExperimentRouter(store, name, predict, log=log.log)
                xs = rng.normal(size=(requests, N_FEATURES))
                pace(router, xs[:50], rate, 0)  # warm-up, not measured
                lat[k].append(pace(router, xs, rate, r * requests))
                router.close()
                dropped += router.shadows.dropped
    log.close()
    delete_topics(bootstrap, [topic])
    out: dict = {"shadow_dropped": dropped, "log_dropped": log.dropped}
    for k, key in ((0, "0_shadows"), (1, "1_shadow"), (2, "2_shadows")):
        a = np.concatenate(lat[k])
        out[f"p50_ms_{key}"] = round(float(np.percentile(a, 50)), 4)
        out[f"p99_ms_{key}"] = round(float(np.percentile(a, 99)), 4)
        out[f"requests_{key}"] = int(a.size)
    out["p99_ratio_2_vs_0"] = round(out["p99_ms_2_shadows"] / out["p99_ms_0_shadows"], 3)
    out["rate_per_s"] = rate
    out["trees"] = TREES
    return out


def report_time(predictions: int, labels: int) -> dict:
    spec = DeploymentSpec(
        "fraud", "1", arms=(Arm("challenger", "2", 0.2),), shadows=("3", "4"), salt="bench"
    )
    # champion (80% of requests) is logged 3 times (itself + 2 shadows), the arm once
    requests = int(predictions / (0.8 * 3 + 0.2))
    preds, outcomes = simulate_log(
        spec, requests, {"1": 1.0, "2": 0.9, "3": 0.8, "4": 1.0},
        labelled=labels / requests, seed=1,
    )
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        DeploymentStore(home / "models").save(spec)
        for frame, folder in zip((preds, outcomes), dataset_dirs(home / "offline"), strict=True):
            folder.mkdir(parents=True)
            files = []
            for i, part in enumerate(frame.iter_slices(max(1, frame.height // 8))):
                name = f"p0000-{i:012d}-{i:012d}.parquet"
                part.write_parquet(folder / name)
                files.append(name)
            (folder / "_manifest.json").write_text(json.dumps({"files": files, "next_offsets": {}}))
        t0 = time.perf_counter()
        r = experiment_report(home / "models", home / "offline", "fraud", reps=200)
        took = time.perf_counter() - t0
    return {
        "report_s_1m": round(took, 3),
        "report_predictions": preds.height,
        "report_labels": outcomes.height,
        "report_bootstrap_reps": 200,
        "report_verdicts": {
            **{f"arm {a['name']}": a["vs_champion"]["verdict"]["word"] for a in r["arms"]},
            **{f"shadow v{s['version']}": s["vs_champion"]["verdict"]["word"]
               for s in r["shadows"]},
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the size")
    args = ap.parse_args()
    scale = 0.1 if args.quick else 1.0

    from tessera.local import start_broker, stop

    proc = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    tmp = tempfile.TemporaryDirectory()
    if not bootstrap:
        proc, bootstrap = start_broker(Path(tmp.name))
    try:
        result = {"scale": scale, "champion_path": "in-process ExperimentRouter (scorer not used)"}
        result.update(shadow_overhead(bootstrap, int(4000 * scale), rounds=3, rate=500.0))
        result.update(report_time(int(1_000_000 * scale), int(200_000 * scale)))
    finally:
        if proc is not None:
            stop(proc)
        tmp.cleanup()
    out = ROOT / "bench" / "results" / "experiments.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{'config':<12}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}")
    for key in ("0_shadows", "1_shadow", "2_shadows"):
        print(
            f"{key:<12}{result['p50_ms_' + key]:>10.3f}{result['p99_ms_' + key]:>10.3f}"
            f"{result['requests_' + key]:>10}"
        )
    print(f"shadow_dropped {result['shadow_dropped']}, p99 ratio 2 vs 0: "
          f"{result['p99_ratio_2_vs_0']}")
    print(f"report: {result['report_predictions']} predictions, {result['report_labels']} labels "
          f"in {result['report_s_1m']} s -> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
