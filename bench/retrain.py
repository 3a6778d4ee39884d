"""Retraining benchmark: the live loop of examples/drift_demo.py, timed end to end.

    .venv/bin/python bench/retrain.py [--quick]

Everything runs through the real path (its own broker and Redis, ``tessera worker``,
``tessera serve``, ``tessera experiment sink``, outcomes on Kafka). Per size (users per traffic
phase; v1 trains on twice as many): the drifted requests are sent 100 at a time and the monitor
(``GET /v1/monitor/fraud``, newest 5000 predictions) asked after each chunk:
``alert_after`` = drifted predictions logged when it first alerted, ``alert_s`` = seconds from
publishing the drifted payments to the alert; ``retrain_s`` = outcome spine + point-in-time
training set from the offline store + train (80 trees, one thread) + register + shadow deploy;
``decide_s`` = one ``tessera retrain fraud`` process (start-up, experiment report, promotion);
``alert_to_promotion_s`` = wall time from publishing the drifted payments to the promoted
champion, including the shadow's traffic and its labels. Writes ``bench/results/retrain.json``.

``--decision-loop``: labels and seconds from the start of a shadow to the anytime-valid
decision ``tessera retrain`` acts on. Synthetic champion + shadow predictions (``simulate_log``,
every request labelled) arrive at ``--rate`` requests/s; after every 100 labels they are committed
to the Parquet log as the sink does and the experiment report is rebuilt (no bootstrap), until
the shadow's decision is no longer "keep collecting" (or 20,000 labels). Per scenario (shadow
better, as good, worse) and seed: the labels at the decision, the traffic seconds those labels
take at ``--rate`` (plus ``--label-delay``), and the compute seconds of all the reports on the
way. Writes ``bench/results/retrain_decision.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def decision_loop(rate: float, label_delay_s: float, seeds: int, step: int = 100,
                  max_labels: int = 20_000) -> list[dict]:
    import polars as pl

    from serving.experiments.report import dataset_dirs, experiment_report
    from serving.experiments.simulate import simulate_log
    from serving.experiments.sink import import_frame
    from serving.experiments.spec import DeploymentSpec, DeploymentStore
    from serving.monitoring.retrain import _sequential_verdict

    rows = []
    for scenario, noise in (("better", {"1": 1.0, "2": 0.8}), ("as good", {"1": 1.0, "2": 1.0}),
                            ("worse", {"1": 0.8, "2": 1.0})):
        for seed in range(seeds):
            with tempfile.TemporaryDirectory() as tmp:
                models, offline = Path(tmp) / "models", Path(tmp) / "offline"
                spec = DeploymentStore(models).save(DeploymentSpec("fraud", "1", shadows=("2",)))
                preds, outcomes = simulate_log(spec, max_labels, noise, labelled=1.0, seed=seed)
                preds = preds.sort("ts")
                order = preds.filter(pl.col("role") == "champion")["request_id"]
                pred_dir, out_dir = dataset_dirs(offline)
                compute, verdict, labels, reports = 0.0, None, 0, 0
                for start in range(0, order.len(), step):
                    ids = order.slice(start, step)
                    batch = pl.col("request_id").is_in(ids.to_list())
                    import_frame(pred_dir, preds.filter(batch))
                    import_frame(out_dir, outcomes.filter(batch))
                    labels = start + ids.len()
                    t = time.perf_counter()
                    r = experiment_report(models, offline, "fraud", reps=0)
                    compute += time.perf_counter() - t
                    reports += 1
                    verdict = _sequential_verdict(r["shadows"][0]["vs_champion"])
                    if verdict["word"] != "keep collecting":
                        break
                rows.append({
                    "scenario": scenario, "seed": seed, "decision": verdict["word"],
                    "labels": labels, "decided_at": verdict["decided_at"],
                    "traffic_s": labels / rate + label_delay_s, "compute_s": compute,
                    "reports": reports,
                })
    return rows


def _decision_main(args) -> None:
    import statistics

    rows = decision_loop(args.rate, args.label_delay, 2 if args.quick else args.seeds)
    summary = {}
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        mine = [r for r in rows if r["scenario"] == scenario]
        summary[scenario] = {
            "runs": len(mine),
            "decisions": {w: sum(r["decision"] == w for r in mine)
                          for w in dict.fromkeys(r["decision"] for r in mine)},
            "median_labels": statistics.median(r["labels"] for r in mine),
            "median_traffic_s": statistics.median(r["traffic_s"] for r in mine),
            "median_compute_s": statistics.median(r["compute_s"] for r in mine),
            "median_reports": statistics.median(r["reports"] for r in mine),
        }
    result = {"rate_per_s": args.rate, "label_delay_s": args.label_delay, "step_labels": 100,
              "max_labels": 20_000, "summary": summary, "runs": rows,
              "machine": platform.machine(), "cpus": os.cpu_count()}
    path = ROOT / "bench" / "results" / "retrain_decision.json"
    path.write_text(json.dumps(result, indent=2))
    head = ["shadow", "runs", "decisions", "median labels", "traffic s", "compute s", "reports"]
    print(f"{head[0]:<10}{head[1]:>6}{head[2]:>28}" + "".join(f"{h:>15}" for h in head[3:]))
    for scenario, m in summary.items():
        dec = ", ".join(f"{k} {v}" for k, v in m["decisions"].items())
        print(f"{scenario:<10}{m['runs']:>6}{dec:>28}{m['median_labels']:>15,.0f}"
              f"{m['median_traffic_s']:>15.1f}{m['median_compute_s']:>15.2f}"
              f"{m['median_reports']:>15.0f}")
    print(f"at {args.rate:g} requests/s, labels {args.label_delay:g} s late; "
          f"wrote {path.relative_to(ROOT)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--decision-loop", action="store_true",
                    help="labels and seconds from shadow start to the sequential decision")
    ap.add_argument("--rate", type=float, default=50.0, help="--decision-loop: requests/s")
    ap.add_argument("--label-delay", type=float, default=0.0, help="--decision-loop: seconds")
    ap.add_argument("--seeds", type=int, default=5, help="--decision-loop: runs per scenario")
    args = ap.parse_args()
    if args.decision_loop:
        _decision_main(args)
        return
    spec = importlib.util.spec_from_file_location("drift_demo", ROOT / "examples/drift_demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    for var in ("KAFKA_BOOTSTRAP", "REDIS_URL"):  # a broker and Redis of its own
        os.environ.pop(var, None)
    rows = []
    for users in (1000,) if args.quick else (1000, 3000):
        with tempfile.TemporaryDirectory() as tmp:
            load = os.getloadavg()[0]
            t = time.perf_counter()
            out = demo.run(Path(tmp), users=users, say=lambda *_: None, probe=100)
            out["wall_s"] = time.perf_counter() - t
            out["loadavg_1m_before"] = load
        out.pop("alerts")
        out["training_rows"] = 2 * users
        rows.append(out)
    result = {"quick": args.quick, "machine": platform.machine(), "cpus": os.cpu_count(),
              "runs": rows}
    path = ROOT / "bench" / "results" / "retrain.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    head = ["users", "alert after", "alert s", "retrain s", "decide s", "alert->promo s", "step"]
    print("".join(f"{h:>15}" for h in head))
    for r in rows:
        cells = [r["users_per_phase"], r.get("alert_after", "none"), f"{r['alert_s']:.1f}",
                 f"{r['retrain_s']:.2f}", f"{r['decide_s']:.2f}",
                 f"{r['alert_to_promotion_s']:.1f}", r["final_step"]]
        print("".join(f"{c:>15}" for c in cells))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
