import pytest

from serving.monitoring.errors import MonitorError
from serving.monitoring.policy import Policy, due

H = 3600.0


def test_each_rule_fires_on_its_own_and_none_when_off():
    assert due(Policy(), 100 * H, None, True, 10**6) is None
    assert "drift" in due(Policy(on_drift=True), 0, 0, True, 0)
    assert due(Policy(on_drift=True), 0, 0, False, 0) is None
    sched = Policy(every_hours=24)
    assert "never" in due(sched, 10 * H, None, False, 0)
    assert due(sched, 10 * H, 0, False, 0) is None
    assert "24.0 h ago" in due(sched, 24 * H, 0, False, 0)
    labels = Policy(after_labels=500)
    assert due(labels, 0, 0, False, 499) is None
    assert "500 new labels" in due(labels, 0, 0, False, 500)


def test_policy_file_loads_and_rejects_unknown_keys(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text("on_drift: true\nevery_hours: 168\n")
    assert Policy.load(p) == Policy(on_drift=True, every_hours=168)
    p.write_text("on_drfit: true\n")
    with pytest.raises(MonitorError, match="unknown policy keys"):
        Policy.load(p)
