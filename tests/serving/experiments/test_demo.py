"""The live demo loop on the real broker: router -> Kafka -> Parquet -> report with verdicts."""

import pytest

from features.kafka_admin import delete_topics
from serving.experiments.demo import run_demo

pytestmark = pytest.mark.integration


def test_demo_finds_the_better_shadow_on_live_traffic(kafka_bootstrap, tmp_path):
    try:
        text = run_demo(tmp_path, kafka_bootstrap, requests=2000, users=500, rate=5000)
    finally:
        delete_topics(["demo_fraud-predictions", "demo_fraud-outcomes"], kafka_bootstrap)
    lines = text.splitlines()
    assert "log records dropped: 0" in lines[0]
    rows = {line.split()[0] + " " + line.split()[1]: line.split() for line in lines[3:6]}
    assert int(rows["champion v1"][2]) + int(rows["arm challenger"][3]) == 2000
    assert "shadow v3: [anytime-valid] the challenger is better (decided at" in text
    last = lines[-1]
    assert (
        last.startswith("anytime-valid decisions: arm challenger v2 ")
        and "shadow v3 better" in last
    )
