"""Shadow scoring in a child process, with boosters loaded from a real registry folder."""

import os
import time

import numpy as np
import pytest

from serving.experiments.shadow import ShadowJob
from serving.experiments.shadow_process import ProcessShadowRunner
from serving.registry import ModelRegistry
from tests.serving.experiments.models import train_boosters
from tests.serving.experiments.test_shadow_router import Collect


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    (b1, b2, b3), x = train_boosters(rounds=(20, 40, 60))
    root = tmp_path_factory.mktemp("models")
    reg = ModelRegistry(root)
    for b in (b1, b2, b3):
        reg.register("m", b.model_to_string(), {"features": [f"f{i}" for i in range(8)]})
    return str(root), {"1": b1, "2": b2, "3": b3}, x


def test_child_scores_equal_direct_predictions(registry):
    root, boosters, x = registry
    log = Collect()
    runner = ProcessShadowRunner(root, "m", log, features="vector", preload=("2", "3"))
    assert runner.wait_ready(30)
    for i in range(200):
        assert runner.submit(ShadowJob(f"r{i}", i, f"k{i}", x[i], ("2", "3"), f"h{i}"))
        if i % 50 == 0:
            time.sleep(0.01)  # several batches, not one
    runner.close()
    assert not runner.alive and runner.scored == 200 and runner.dropped == 0
    got = {(r.version, r.request_id): r for r in log.records}
    assert len(got) == 400
    for v in ("2", "3"):
        want = boosters[v].predict(x[:200])
        for i in range(200):
            rec = got[(v, f"r{i}")]
            assert (rec.role, rec.entity_key, rec.ts, rec.features_hash) == (
                "shadow", f"k{i}", i, f"h{i}")
            assert rec.score == pytest.approx(want[i], abs=1e-12)
            assert rec.features == pytest.approx(list(x[i]))


def test_a_full_queue_drops_and_counts_and_close_leaves_no_child(registry):
    root, _, x = registry
    log = Collect()
    runner = ProcessShadowRunner(root, "m", log, maxsize=8, batch=4)
    # the child is still starting, so almost nothing is drained while we submit
    accepted = sum(runner.submit(ShadowJob(str(i), 0, "k", x[i], ("2",), "h")) for i in range(500))
    assert accepted < 500
    assert runner.dropped == 500 - accepted
    runner.close()
    pid = runner.pid  # the child started with the first job (lazily, in the background)
    assert pid is not None and not runner.alive
    assert runner.scored == accepted == len(log.records)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_an_unknown_version_is_logged_as_an_error(registry):
    root, _, x = registry
    log = Collect()
    runner = ProcessShadowRunner(root, "m", log)
    runner.submit(ShadowJob("r", 0, "k", np.asarray(x[0]), ("9",), "h"))
    runner.close()
    (rec,) = log.records
    assert rec.score is None and rec.error and rec.version == "9"


@pytest.mark.integration
def test_child_logs_shadow_records_to_kafka(registry, kafka_bootstrap, unique_name, tmp_path):
    from features.kafka_admin import create_topics, delete_topics
    from serving.experiments.records import PREDICTION_SCHEMA
    from serving.experiments.sink import ParquetSink, read_dataset

    root, boosters, x = registry
    create_topics([unique_name], kafka_bootstrap, partitions=1)
    try:
        sent_back = Collect()
        runner = ProcessShadowRunner(root, "m", sent_back, preload=("2",),
                                     kafka=(kafka_bootstrap, unique_name))
        assert runner.wait_ready(30)
        for i in range(50):
            assert runner.submit(ShadowJob(f"r{i}", i, "k", x[i], ("2",), "h"))
        runner.close()
        assert runner.scored == 50 and sent_back.records == []  # nothing came back to log
        sink = ParquetSink(kafka_bootstrap, unique_name, tmp_path / "o", PREDICTION_SCHEMA)
        assert sink.run(idle_s=1.0) == 50
        sink.close()
        df = read_dataset(tmp_path / "o", PREDICTION_SCHEMA).sort("ts")
        assert df["role"].to_list() == ["shadow"] * 50
        assert df["score"].to_list() == pytest.approx(list(boosters["2"].predict(x[:50])),
                                                      abs=1e-12)
    finally:
        delete_topics([unique_name], kafka_bootstrap)


def test_the_child_starts_with_the_first_job_not_before(registry):
    root, _, x = registry
    log = Collect()
    runner = ProcessShadowRunner(root, "m", log, batch=1)
    time.sleep(0.2)
    assert runner.pid is None and not runner.alive  # constructing costs no process
    assert runner.submit(ShadowJob("r", 0, "k", x[0], ("2",), "h"))
    assert runner.wait_ready(30) and runner.alive
    runner.close()
    assert runner.scored == 1 and len(log.records) == 1


def _metric(name: str, model: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, {"model": model}) or 0.0


@pytest.mark.integration
def test_the_childs_log_drops_reach_the_scorers_metrics(
    registry, kafka_bootstrap, unique_name, tmp_path
):
    from features.kafka_admin import create_topics, delete_topics
    from serving.experiments.records import PREDICTION_SCHEMA
    from serving.experiments.sink import ParquetSink

    root, _, x = registry
    create_topics([unique_name], kafka_bootstrap, partitions=1)
    before = _metric("tessera_shadow_log_dropped_total", "m")
    try:
        # a one-batch log queue: batches scored while the log thread lingers are dropped
        runner = ProcessShadowRunner(root, "m", Collect(), preload=("2",), batch=8,
                                     kafka=(kafka_bootstrap, unique_name), log_queue=1)
        for i in range(400):
            assert runner.submit(ShadowJob(f"r{i}", i, "k", x[i % len(x)], ("2",), "h"))
        runner.close()
        assert runner.scored == 400 and runner.log_dropped > 0
        assert _metric("tessera_shadow_log_dropped_total", "m") - before == runner.log_dropped
        sink = ParquetSink(kafka_bootstrap, unique_name, tmp_path / "o", PREDICTION_SCHEMA)
        assert sink.run(idle_s=1.0) == 400 - runner.log_dropped  # every record sent or counted
        sink.close()
    finally:
        delete_topics([unique_name], kafka_bootstrap)


def test_chunks_cross_the_socket_exactly_without_pickle():
    import numpy as np

    from serving.experiments.shadow_process import decode_chunk, encode_chunk

    x = np.array([0.1, np.nan, -np.inf, 1e300, 5e-324])
    items = [("r1", 17, "user:u1", ("2", "3"), "ab12", x.tobytes()),
             ("r2", 18, "user:ü", (), "", np.array([], dtype=np.float64).tobytes())]
    back = decode_chunk(encode_chunk(items))
    assert back == items
    assert np.frombuffer(back[0][5], dtype=np.float64).tobytes() == x.tobytes()



def _idle_then_sleep(ready) -> None:
    from serving.experiments.shadow_process import _lower_priority

    _lower_priority(19)
    ready.set()
    time.sleep(30)


def test_close_makes_the_child_a_normal_task_again():
    """The child runs at idle priority while the scorer serves; at close the scorer serves no
    more, so the queued work must not wait for an idle core (on a busy machine none comes):
    the child is put back to a normal policy and nice 0 first."""
    import multiprocessing as mp

    from serving.experiments.shadow_process import _normal_priority

    ctx = mp.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_idle_then_sleep, args=(ready,), daemon=True)
    child.start()
    try:
        assert ready.wait(30)
        assert os.sched_getscheduler(child.pid) == os.SCHED_IDLE
        _normal_priority(child.pid)
        if os.geteuid() == 0:  # unprivileged, RLIMIT_NICE decides; the call must not raise
            assert os.sched_getscheduler(child.pid) == os.SCHED_OTHER
            assert os.getpriority(os.PRIO_PROCESS, child.pid) == 0
    finally:
        child.kill()
        child.join()


def test_the_child_runs_at_idle_priority(registry):
    root, _, _ = registry
    runner = ProcessShadowRunner(root, "m", Collect())
    try:
        assert runner.wait_ready(30)
        assert os.sched_getscheduler(runner.pid) == os.SCHED_IDLE
    finally:
        runner.close()
