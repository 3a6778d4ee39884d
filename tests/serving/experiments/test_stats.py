"""Statistics against brute force, and the verdict's error rates over many seeds."""

import math

import numpy as np
import pytest

from serving.experiments import stats
from tests.serving.experiments.synthetic import labelled_scores


def brute_auc(y, s):
    pos = s[y == 1]
    neg = s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (pos.size * neg.size)


def test_auc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300), 1)  # many ties
    assert stats.auc(y, s) == pytest.approx(brute_auc(y, s))
    assert math.isnan(stats.auc(np.ones(5), np.arange(5)))


def test_point_metrics_on_known_values():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.2, 0.6, 0.4])
    assert stats.brier(y, p) == pytest.approx((0.01 + 0.04 + 0.16 + 0.16) / 4)
    expect = -(np.log(0.9) + np.log(0.8) + np.log(0.6) + np.log(0.6)) / 4
    assert stats.logloss(y, p) == pytest.approx(expect)
    bins = stats.reliability_bins(y, p, bins=2)
    assert [b["count"] for b in bins] == [2, 2]
    assert bins[0]["positive_rate"] == 0.0 and bins[1]["positive_rate"] == 1.0
    assert stats.agreement(p, np.array([0.1, 0.1, 0.9, 0.9]), 0.5) == 0.5
    lat = stats.latency_percentiles(np.arange(1, 101, dtype=float))
    assert lat["p50_ms"] == pytest.approx(50.5) and lat["p99_ms"] == pytest.approx(99.01)


def test_weighted_auc_with_unit_weights_is_the_auc():
    y, (s,) = labelled_scores(2000, [1.0], seed=3)
    s = np.round(s, 2)
    for scores in (s, s + np.arange(s.size) * 1e-9):  # with ties, and without
        sa = stats._SortedAuc(y, scores)
        assert sa(np.ones(y.size)) == pytest.approx(stats.auc(y, scores))
        w = np.bincount(np.random.default_rng(0).integers(0, y.size, y.size), minlength=y.size)
        rep = np.repeat(sa.order, w)  # weights are in score order
        assert sa(w.astype(float)) == pytest.approx(brute_auc(y[rep], scores[rep]))


def test_delong_se_agrees_with_the_bootstrap():
    y, (a, b) = labelled_scores(3000, [1.0, 0.7], seed=5)
    t = stats.delong_paired(y, a, b)
    assert t.auc_a == pytest.approx(stats.auc(y, a)) and t.auc_b == pytest.approx(stats.auc(y, b))
    ci = stats.bootstrap_cis(y, b, a, reps=300, seed=1)["auc_diff"]
    assert (ci[1] - ci[0]) / (2 * 1.96) == pytest.approx(t.se, rel=0.25)
    assert ci[0] < t.diff < ci[1]


def test_a_truly_better_shadow_is_found_better():
    found = 0
    for seed in range(100):
        y, (champ, chall) = labelled_scores(3000, [1.5, 0.6], seed=seed)
        v = stats.verdict(stats.delong_paired(y, champ, chall), y.size)
        found += v.word == "better"
        assert v.word != "worse"
    assert found >= 90


def test_an_equally_good_shadow_is_not_found_different_beyond_alpha():
    # Same noise level, independent draws: the null hypothesis is true. At alpha=0.05 over 200
    # seeds we expect 10 false positives; 18 is beyond the binomial 99th percentile.
    false_pos = 0
    for seed in range(200):
        y, (champ, chall) = labelled_scores(1500, [1.0, 1.0], seed=1000 + seed)
        v = stats.verdict(stats.delong_paired(y, champ, chall), y.size, alpha=0.05)
        false_pos += v.word != "no difference yet"
    assert false_pos <= 18


def test_unpaired_arms_error_rate_and_power():
    false_pos = found = 0
    for seed in range(200):
        y1, (s1,) = labelled_scores(2000, [1.0], seed=2 * seed)
        y2, (s2,) = labelled_scores(2000, [1.0], seed=2 * seed + 1)
        false_pos += stats.delong_unpaired(y1, s1, y2, s2).p_value < 0.05
        y3, (s3,) = labelled_scores(2000, [0.2], seed=2 * seed + 1)
        t = stats.delong_unpaired(y1, s1, y3, s3)
        found += t.p_value < 0.05 and t.diff > 0
    assert false_pos <= 18
    assert found >= 180


def test_two_proportion_error_rate_and_power():
    rng = np.random.default_rng(7)
    n = 5000
    same = rng.binomial(n, 0.10, size=(400, 2))
    fp = sum(stats.two_proportion_z(a, n, b, n).p_value < 0.05 for a, b in same)
    assert fp <= 32  # expected 20 of 400
    lifted = np.c_[rng.binomial(n, 0.10, 200), rng.binomial(n, 0.13, 200)]
    hits = sum(
        (t := stats.two_proportion_z(a, n, b, n)).p_value < 0.05 and t.diff > 0
        for a, b in lifted
    )
    assert hits >= 180


def test_identical_scores_are_no_difference_and_labels_needed_shrinks_with_effect():
    y, (a,) = labelled_scores(1000, [1.0], seed=9)
    v = stats.verdict(stats.delong_paired(y, a, a.copy()), y.size)
    assert v.word == "no difference yet"
    small = stats.labels_needed(1000, 0.005, 0.01)
    large = stats.labels_needed(1000, 0.02, 0.01)
    assert small > large >= 0
    # at the required size the same effect would sit at the detection boundary
    assert stats.labels_needed(1000 + small, 0.005, 0.01 * math.sqrt(1000 / (1000 + small))) <= 1


def test_mcnemar_detects_paired_accuracy_gain():
    rng = np.random.default_rng(2)
    a = rng.random(4000) < 0.80
    b = a | (rng.random(4000) < 0.1)
    t = stats.mcnemar(a, b)
    assert t.diff > 0 and t.p_value < 1e-6
    assert stats.mcnemar(a, a).p_value == 1.0
