"""Deployment specs are versioned with an audit trail; assignment is sticky and weighted."""

from dataclasses import replace

import numpy as np
import pytest

from serving.experiments.assign import assign, bucket, entity_key_of
from serving.experiments.errors import ExperimentError
from serving.experiments.spec import Arm, DeploymentSpec, DeploymentStore, parse_arm


def test_split_respects_weights_and_is_sticky():
    spec = DeploymentSpec(
        "fraud", "1", arms=(Arm("b", "2", 0.2), Arm("c", "3", 0.1)), salt="exp-1"
    )
    keys = [entity_key_of({"user_id": f"u{i}"}) for i in range(40_000)]
    arms = [assign(spec, k)[0] for k in keys]
    share = {a: arms.count(a) / len(keys) for a in ("champion", "b", "c")}
    # 3 binomial standard deviations at n=40k is below 0.007
    assert share["b"] == pytest.approx(0.2, abs=0.007)
    assert share["c"] == pytest.approx(0.1, abs=0.007)
    assert share["champion"] == pytest.approx(0.7, abs=0.007)
    assert [assign(spec, k)[0] for k in keys[:1000]] == arms[:1000]
    # another salt reshuffles entities but keeps the split
    other = [assign(replace(spec, salt="exp-2"), k)[0] for k in keys]
    assert np.mean([a != b for a, b in zip(arms, other, strict=True)]) > 0.3
    assert other.count("b") / len(keys) == pytest.approx(0.2, abs=0.007)


def test_stopping_an_arm_moves_only_its_entities():
    spec = DeploymentSpec("m", "1", arms=(Arm("b", "2", 0.3), Arm("c", "3", 0.3)), salt="s")
    stopped = replace(spec, arms=(replace(spec.arms[0], stopped="p99"), spec.arms[1]))
    for i in range(5000):
        k = f"user_id=u{i}"
        before, after = assign(spec, k)[0], assign(stopped, k)[0]
        assert after == ("champion" if before == "b" else before)


def test_bucket_is_uniform():
    u = np.array([bucket(f"k{i}", "salt") for i in range(20_000)])
    hist = np.histogram(u, bins=10, range=(0, 1))[0]
    assert hist.min() > 1800 and hist.max() < 2200


def test_store_versions_every_change_with_audit(tmp_path):
    store = DeploymentStore(tmp_path)
    with pytest.raises(ExperimentError, match="tessera deploy fraud --champion"):
        store.current("fraud")
    s1 = store.save(DeploymentSpec("fraud", "1"), why="first", who="ana")
    s2 = store.save(replace(s1, arms=(parse_arm("challenger=2:0.25"),), shadows=("3",)), why="ab")
    assert (s1.revision, s2.revision) == (1, 2)
    assert store.current("fraud") == s2
    assert [s.revision for s in store.history("fraud")] == [1, 2]
    log = store.audit_log("fraud")
    assert log[0]["who"] == "ana" and log[0]["before"] is None and log[0]["why"] == "first"
    assert log[1]["before"]["arms"] == [] and log[1]["after"]["arms"][0]["weight"] == 0.25


def test_invalid_specs_say_what_to_do():
    with pytest.raises(ExperimentError, match="NAME=VERSION:WEIGHT"):
        parse_arm("challenger:2")
    with pytest.raises(ExperimentError, match="below 1"):
        DeploymentSpec("m", "1", arms=(Arm("a", "2", 0.6), Arm("b", "3", 0.5)))
    with pytest.raises(ExperimentError, match="reserved"):
        DeploymentSpec("m", "1", arms=(Arm("champion", "2", 0.1),))
