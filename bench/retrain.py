"""Retraining benchmark: the loop of examples/drift_demo.py timed end to end.

    .venv/bin/python bench/retrain.py [--quick]

For each scale (training rows = 20k x scale, live requests per phase = 4k x scale; 4 features,
300 trees, one LightGBM thread): ``retrain_s`` = fresh training set fingerprint + train with
the champion's params + register with lineage + shadow deploy; ``decide_s`` = experiment report
over the logged predictions and labels + promotion; ``alert_to_promotion_compute_s`` = from the
drift alert to the promoted champion, compute only (in production the wait for labels on the
shadow dominates: it is set by traffic, not by Tessera). Writes ``bench/results/retrain.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
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
    rows = []
    for scale in (1.0,) if args.quick else (1.0, 5.0):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            out = demo.run(Path(tmp), scale=scale, say=lambda *_: None)
            out["wall_s"] = time.perf_counter() - t
        out.pop("alerts")
        out["training_rows"] = int(20_000 * scale)
        out["live_requests_per_phase"] = int(4_000 * scale)
        rows.append(out)
    result = {"quick": args.quick, "machine": platform.machine(), "runs": rows}
    path = ROOT / "bench" / "results" / "retrain.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(
        f"{'train rows':>11}{'retrain s':>11}{'decide s':>10}{'alert->promo s':>16}{'outcome':>10}"
    )
    for r in rows:
        print(
            f"{r['training_rows']:>11}{r['retrain_s']:>11.2f}{r['decide_s']:>10.2f}"
            f"{r['alert_to_promotion_compute_s']:>16.2f}{r['final_step']:>10}"
        )
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
