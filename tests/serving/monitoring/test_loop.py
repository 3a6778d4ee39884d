"""The whole loop of examples/drift_demo.py at a small scale, through the live path: payments on
Kafka, a real worker, ``tessera serve``, the sink, outcomes; alert, retrain, shadow, promote."""

import importlib.util
from pathlib import Path

import pytest

from features.kafka_admin import delete_topics
from serving.experiments.kafka_log import OUTCOMES_TOPIC, PREDICTIONS_TOPIC

DEMO = Path(__file__).resolve().parents[3] / "examples" / "drift_demo.py"
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def test_drift_in_the_events_leads_to_a_retrained_champion(
    tmp_path, kafka_bootstrap, redis_url, monkeypatch
):
    spec = importlib.util.spec_from_file_location("drift_demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    monkeypatch.setenv("KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("REDIS_URL", redis_url)
    try:  # the scorer logs to the default topics: start them empty on this shared broker
        delete_topics([PREDICTIONS_TOPIC, OUTCOMES_TOPIC], kafka_bootstrap)
    except Exception:  # noqa: BLE001 - not created yet
        pass
    lines: list[str] = []
    out = demo.run(tmp_path, users=1000, say=lines.append)
    assert out["status_before"] == "ok"
    assert out["status_after"] == "alert"
    drifted = {a["column"] for a in out["alerts"] if a["kind"] == "drift"}
    assert drifted and all(c.startswith("pay_amount:") or c == "score" for c in drifted), drifted
    assert out["final_step"] == "promoted" and out["champion"] == "2", (out, lines)
    assert any("the challenger is better" in line for line in lines)
    assert out["served_after"] == {"2": 1000}  # the scorer followed the promotion
    assert out["status_promoted"] == "ok"  # and the new champion's reference fits the new world
