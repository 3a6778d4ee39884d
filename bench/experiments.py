"""Experiments benchmark: shadow overhead on the champion's latency, and report time.

    .venv/bin/python bench/experiments.py [--quick]

1. Champion latency with 0, 1 and 2 shadows at the same paced load (500 requests/s, one entity
   per request), measured around ``Scorer.predict`` in-process: Redis features (real
   redis-server) -> vector -> ``ExperimentRouter`` with three registered 300-tree LightGBM
   versions, every prediction logged to a real Kafka-protocol broker (started here unless
   ``KAFKA_BOOTSTRAP`` is set). The three configurations run interleaved in rounds so machine
   noise hits them alike.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.experiments.kafka_log import KafkaRecordLog, delete_topics, ensure_topics  # noqa: E402
from serving.experiments.report import dataset_dirs, experiment_report  # noqa: E402
from serving.experiments.simulate import simulate_log  # noqa: E402
from serving.experiments.sink import import_frame  # noqa: E402
from serving.experiments.spec import Arm, DeploymentSpec, DeploymentStore  # noqa: E402
from serving.experiments.wiring import attach_router  # noqa: E402

TREES = 300


def pace(score, users: int, requests: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Call ``score(user)`` ``requests`` times at ``rate`` per second; latencies in ms."""
    lat = np.empty(requests)
    gap = 1.0 / rate
    nxt = time.perf_counter()
    for i in range(requests):
        now = time.perf_counter()
        if now < nxt:
            time.sleep(nxt - now)
        nxt += gap
        user = f"u{rng.integers(users)}"
        t0 = time.perf_counter()
        score(user)
        lat[i] = (time.perf_counter() - t0) * 1000
    return lat


def shadow_overhead(bootstrap: str, work: Path, requests: int, rounds: int, rate: float) -> dict:
    """Champion latency through the real scorer (Redis features -> vector -> router)."""
    import redis

    from features.online.read import OnlineStore
    from serving.registry import ModelRegistry
    from serving.registry.training import train
    from serving.scorer.models import ModelSet
    from serving.scorer.scorer import Scorer
    from serving.scorer.synthetic import REPO, write_training_set, write_users
    from tessera.local import start_redis, stop

    handle, url = start_redis(work / "redis")
    try:
        client = redis.Redis.from_url(url)
        users = 5000
        now = time.time_ns() // 1000
        risky = write_users(client, users, now, seed=1)
        write_training_set(client, work / "train.parquet", users, risky, now)
        reg = ModelRegistry(work / "models")
        for seed in (1, 2, 3):
            res = train(work / "train.parquet", "label",
                        params={"num_iterations": TREES, "num_leaves": 31}, seed=seed)
            reg.register("fraud", res.model_text, res.metadata())
        reg.set_alias("fraud", "champion", "1")
        topic = f"bench-predictions-{os.getpid()}"
        ensure_topics(bootstrap, [topic], partitions=4)
        log = KafkaRecordLog(bootstrap, topic)
        lat: dict[int, list[np.ndarray]] = {0: [], 1: [], 2: []}
        dropped = 0
        rng = np.random.default_rng(0)
        scorers = {}
        for k in (0, 1, 2):
            models = ModelSet(reg)
            models.serve("fraud")
            for v in ("2", "3"):
                models.version("fraud", v)  # loaded before timing, as a deployed shadow would be
            scorer = Scorer(OnlineStore(client, REPO), models)
            name_store = DeploymentStore(work / f"deploy{k}")
            name_store.save(DeploymentSpec("fraud", "1", shadows=("2", "3")[:k]))
            scorers[k] = (scorer, name_store)
        for _ in range(rounds):
            for k in (0, 1, 2):
                scorer, name_store = scorers[k]
                router = attach_router(scorer, name_store, "fraud", log=log.log,
                                       shadow_kafka=(bootstrap, topic))

                def score(user, scorer=scorer):
                    scorer.predict("fraud", [{"user_id": user}], at=now)

                pace(score, users, 50, rate, rng)  # warm-up, not measured
                lat[k].append(pace(score, users, requests, rate, rng))
                router.close()
                dropped += router.shadows.dropped
        log.close()
        delete_topics(bootstrap, [topic])
        client.close()
    finally:
        stop(handle)
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
            for part in frame.iter_slices(max(1, frame.height // 8)):
                import_frame(folder, part)
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
        result = {
            "scale": scale,
            "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
            "champion_path": "Scorer.predict in-process: Redis HMGET + fold + vector + "
            "ExperimentRouter (fast single-row champion predict, Kafka prediction log)",
        }
        result.update(
            shadow_overhead(bootstrap, Path(tmp.name), int(1500 * scale), rounds=8, rate=500.0)
        )
        result.update(report_time(int(1_000_000 * scale), int(200_000 * scale)))
    finally:
        if proc is not None:
            stop(proc)
        tmp.cleanup()
    result["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    result["cores"] = os.cpu_count()
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
