"""The whole loop of examples/drift_demo.py at a small scale: alert, retrain, shadow, promote."""

import importlib.util
from pathlib import Path

DEMO = Path(__file__).resolve().parents[3] / "examples" / "drift_demo.py"


def test_drift_alert_leads_to_a_retrained_champion(tmp_path):
    spec = importlib.util.spec_from_file_location("drift_demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    lines: list[str] = []
    out = demo.run(tmp_path, scale=0.3, say=lines.append)
    assert out["status_before"] == "ok"
    assert out["status_after"] == "alert"
    assert {"column": "txn:amount", "kind": "drift"} in out["alerts"]
    assert {a["column"] for a in out["alerts"]} <= {"txn:amount", "score"}  # nothing else moved
    assert out["final_step"] == "promoted" and out["champion"] == "2"
    assert any("the challenger is better" in line for line in lines)
