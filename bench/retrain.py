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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
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
