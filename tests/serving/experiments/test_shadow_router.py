"""Shadows and the request path with real LightGBM boosters."""

import threading
import time

import pytest

from serving.experiments.assign import assign
from serving.experiments.records import expand
from serving.experiments.router import ExperimentRouter
from serving.experiments.shadow import ShadowJob, ShadowRunner
from serving.experiments.spec import Arm, DeploymentSpec, DeploymentStore, Guardrails
from tests.serving.experiments.models import train_boosters


@pytest.fixture(scope="module")
def boosters():
    (b1, b2, b3), x = train_boosters(rounds=(20, 40, 60))
    return {"1": b1, "2": b2, "3": b3}, x


def predict_with(models):
    return lambda version, x: models[version].predict(x, num_threads=1)


class Collect:
    def __init__(self):
        self.records = []
        self.lock = threading.Lock()

    def __call__(self, item):
        with self.lock:
            self.records.extend(expand([item]))


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_shadows_score_the_champions_vector(boosters, tmp_path):
    models, x = boosters
    store = DeploymentStore(tmp_path)
    store.save(DeploymentSpec("fraud", "1", shadows=("2", "3")))
    log = Collect()
    router = ExperimentRouter(store, "fraud", predict_with(models), log=log, features="vector")
    served = [router.score(f"user_id=u{i}", x[i]) for i in range(300)]
    router.close()
    wait_for(lambda: len(log.records) == 900)
    by_role = {}
    for r in log.records:
        by_role.setdefault((r.role, r.version), {})[r.request_id] = r
    champ = by_role[("champion", "1")]
    assert [champ[s.request_id].score for s in served] == [s.score for s in served]
    for v in ("2", "3"):
        shadow = by_role[("shadow", v)]
        assert shadow.keys() == champ.keys()
        for i, s in enumerate(served):
            rec = shadow[s.request_id]
            assert rec.features_hash == champ[s.request_id].features_hash
            assert rec.features == pytest.approx(list(x[i]))
            assert rec.score == pytest.approx(models[v].predict(x[i : i + 1])[0], abs=1e-12)
    assert router.shadows.dropped == 0


def test_a_full_shadow_queue_drops_and_counts(boosters):
    models, x = boosters
    release = threading.Event()

    def slow(version, xs):
        release.wait(5)
        return models[version].predict(xs)

    log = Collect()
    runner = ShadowRunner("m", slow, log, maxsize=8, batch=4)
    accepted = sum(runner.submit(ShadowJob(str(i), 0, "k", x[i], ("2",), "h")) for i in range(200))
    # the worker holds at most one batch while blocked; the queue holds at most 8
    assert accepted <= 8 + 4
    assert runner.dropped == 200 - accepted
    release.set()
    runner.close()
    assert len(log.records) == accepted == runner.scored


def test_arm_assignment_is_served_and_reported(boosters, tmp_path):
    models, x = boosters
    store = DeploymentStore(tmp_path)
    spec = store.save(DeploymentSpec("fraud", "1", arms=(Arm("challenger", "2", 0.3),), salt="s"))
    log = Collect()
    router = ExperimentRouter(store, "fraud", predict_with(models), log=log)
    for i in range(400):
        key = f"user_id=u{i % 50}"
        served = router.score(key, x[i])
        assert (served.arm, served.version) == assign(spec, key)
        assert served.score == pytest.approx(models[served.version].predict(x[i : i + 1])[0])
    arms = {r.arm for r in log.records}
    assert arms == {"champion", "challenger"}
    assert {r.role for r in log.records if r.arm == "challenger"} == {"arm"}
    router.close()


def test_guardrail_stops_a_failing_arm_and_audits_it(boosters, tmp_path):
    models, x = boosters

    def flaky(version, xs):
        if version == "2":
            raise RuntimeError("model file corrupt")
        return models[version].predict(xs)

    store = DeploymentStore(tmp_path)
    rules = Guardrails(max_error_rate=0.1, min_requests=20, window=100)
    store.save(DeploymentSpec("fraud", "1", arms=(Arm("b", "2", 0.5),), guardrails=rules))
    router = ExperimentRouter(store, "fraud", flaky)
    served = [router.score(f"user_id=u{i}", x[i % 100]) for i in range(400)]
    assert all(s.arm == "champion" for s in served[-100:])  # b is stopped, champion serves
    spec = store.current("fraud")
    assert spec.arm("b").stopped.startswith("error rate 100.0%")
    entry = store.audit_log("fraud")[-1]
    assert entry["who"] == "guardrail" and "stopped b" in entry["why"]
    router.close()


def test_slow_arm_is_stopped_on_p99(boosters, tmp_path):
    models, x = boosters

    def slow_b(version, xs):
        if version == "2":
            time.sleep(0.004)
        return models[version].predict(xs)

    store = DeploymentStore(tmp_path)
    rules = Guardrails(max_p99_ms=2.0, min_requests=20, window=50)
    store.save(DeploymentSpec("fraud", "1", arms=(Arm("b", "2", 0.5),), guardrails=rules))
    router = ExperimentRouter(store, "fraud", slow_b)
    for i in range(200):
        router.score(f"user_id=u{i}", x[i])
    assert "p99 latency" in store.current("fraud").arm("b").stopped
    router.close()


def test_new_spec_revisions_hot_reload(boosters, tmp_path):
    models, x = boosters
    store = DeploymentStore(tmp_path)
    spec = store.save(DeploymentSpec("fraud", "1"))
    router = ExperimentRouter(store, "fraud", predict_with(models), reload_every_s=0.0)
    assert router.score("user_id=a", x[0]).version == "1"
    store.save(DeploymentSpec("fraud", "3", revision=spec.revision), why="promote")
    assert router.score("user_id=a", x[0]).version == "3"
    router.close()
