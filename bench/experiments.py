"""Experiments benchmark: shadow overhead on the champion's latency, and report time.

    .venv/bin/python bench/experiments.py [--quick]

1. Champion latency with 0, 1 and 2 shadows at the same paced load (500 requests/s, one entity
   per request), measured around ``Scorer.predict`` in-process: Redis features (real
   redis-server) -> vector -> ``ExperimentRouter`` with three registered 300-tree LightGBM
   versions, every prediction logged to a real Kafka-protocol broker (started here unless
   ``KAFKA_BOOTSTRAP`` is set). The three routers stay attached (their shadow processes started
   and ready before timing); the configurations run in interleaved rounds so machine noise
   hits them alike, and ``p99_ms_*`` is the median of the per-round p99s (the pooled p99 is
   ``p99_ms_pooled_*``).
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

from features.kafka_admin import create_topics, delete_topics  # noqa: E402
from serving.experiments.kafka_log import KafkaRecordLog  # noqa: E402
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
        create_topics([topic], bootstrap, partitions=4)
        log = KafkaRecordLog(bootstrap, topic)
        # config 3 repeats config 0 (no shadows): the spread between 0 and 3 is the noise floor
        configs = {0: 0, 1: 1, 2: 2, 3: 0}
        lat: dict[int, list[np.ndarray]] = {k: [] for k in configs}
        rng = np.random.default_rng(0)
        routers = {}
        for k, shadows in configs.items():
            models = ModelSet(reg)
            models.serve("fraud")
            for v in ("2", "3"):
                models.version("fraud", v)  # loaded before timing, as a deployed shadow would be
            scorer = Scorer(OnlineStore(client, REPO), models)
            name_store = DeploymentStore(work / f"deploy{k}")
            name_store.save(DeploymentSpec("fraud", "1", shadows=("2", "3")[:shadows]))
            router = attach_router(scorer, name_store, "fraud", log=log.log,
                                   shadow_kafka=(bootstrap, topic))
            if shadows:  # the child starts lazily with the first shadow job; not timed here
                router.shadows.wait_ready(60)

            def score(user, scorer=scorer):
                scorer.predict("fraud", [{"user_id": user}], at_us=now)

            pace(score, users, 200, rate, rng)  # warm-up, not measured
            routers[k] = (router, score)
        # interleaved rounds, so machine noise hits the three configurations alike
        for _ in range(rounds):
            for k in configs:
                lat[k].append(pace(routers[k][1], users, requests, rate, rng))
        dropped = log_dropped = 0
        for router, _ in routers.values():
            router.close()
            dropped += router.shadows.dropped
            log_dropped += getattr(router.shadows, "log_dropped", 0)
        log.close()
        delete_topics([topic], bootstrap)
        client.close()
    finally:
        stop(handle)
    out: dict = {"shadow_dropped": dropped, "log_dropped": log.dropped,
                 "shadow_log_dropped": log_dropped}
    for k, key in ((0, "0_shadows"), (1, "1_shadow"), (2, "2_shadows"), (3, "0_shadows_again")):
        a = np.concatenate(lat[k])
        per_round = [float(np.percentile(r, 99)) for r in lat[k]]
        out[f"p50_ms_{key}"] = round(float(np.percentile(a, 50)), 4)
        out[f"p99_ms_{key}"] = round(float(np.median(per_round)), 4)
        out[f"p99_ms_pooled_{key}"] = round(float(np.percentile(a, 99)), 4)
        out[f"p99_ms_rounds_{key}"] = [round(p, 3) for p in per_round]
        out[f"requests_{key}"] = int(a.size)
    out["p99_ratio_2_vs_0"] = round(out["p99_ms_2_shadows"] / out["p99_ms_0_shadows"], 3)
    out["p99_ratio_1_vs_0"] = round(out["p99_ms_1_shadow"] / out["p99_ms_0_shadows"], 3)
    out["p99_ratio_0_again_vs_0"] = round(
        out["p99_ms_0_shadows_again"] / out["p99_ms_0_shadows"], 3)
    for name, k in (("2_vs_0", 2), ("0_again_vs_0", 3)):  # round by round, then the median
        out[f"p99_ratio_{name}_paired"] = round(float(np.median(
            [np.percentile(a, 99) / np.percentile(b, 99)
             for a, b in zip(lat[k], lat[0], strict=True)])), 3)
    out["p99_ratio_2_vs_0_pooled"] = round(
        out["p99_ms_pooled_2_shadows"] / out["p99_ms_pooled_0_shadows"], 3)
    out["p99_is"] = f"median over {rounds} interleaved rounds of each round's p99"
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
            # 12,000 requests per configuration in 24 rounds of 0.5 k (quick: 8 rounds of 150)
            shadow_overhead(bootstrap, Path(tmp.name), 150 if args.quick else 500,
                            rounds=8 if args.quick else 24, rate=500.0)
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
    print(f"{'config':<16}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}")
    for key in ("0_shadows", "1_shadow", "2_shadows", "0_shadows_again"):
        print(
            f"{key:<16}{result['p50_ms_' + key]:>10.3f}{result['p99_ms_' + key]:>10.3f}"
            f"{result['requests_' + key]:>10}"
        )
    print(f"p99 ratio 0 again vs 0 (noise floor): {result['p99_ratio_0_again_vs_0']}, "
          f"paired by round {result['p99_ratio_0_again_vs_0_paired']}; 2 vs 0 paired by round "
          f"{result['p99_ratio_2_vs_0_paired']}")
    print(f"shadow_dropped {result['shadow_dropped']}, p99 ratio 2 vs 0: "
          f"{result['p99_ratio_2_vs_0']}")
    print(f"report: {result['report_predictions']} predictions, {result['report_labels']} labels "
          f"in {result['report_s_1m']} s -> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
