"""Confidence sequences: their error rates under continuous monitoring, over many seeds.

Every A/A experiment below is looked at after *every* label (the hardest kind of peeking); the
fixed-horizon test on the same data shows what the sequential test protects against.
"""

import math

import numpy as np
import pytest
from scipy import stats as sps

from serving.experiments import sequential as sq
from tests.serving.experiments.synthetic import labelled_scores

ALPHA = 0.05
Z = sps.norm.ppf(1 - ALPHA / 2)


def _loss_diffs(n: int, noises: tuple[float, float], seed: int) -> np.ndarray:
    y, (a, b) = labelled_scores(n, list(noises), seed)
    return sq.per_request_logloss(y, a) - sq.per_request_logloss(y, b)


def test_margin_is_the_normal_mixture_boundary():
    # the two-sided normal mixture of exp(l S - l^2 t / 2) over l ~ N(0, rho^2) equals 1/alpha
    # exactly at |S| = t * margin(t) for unit variance
    for t in (10, 100, 5000, 10**6):
        r2 = sq.rho_squared(ALPHA, 5000)
        s = t * float(sq.margin(t, ALPHA, 5000))
        mixture = math.exp(r2 * s * s / (2 * (1 + t * r2))) / math.sqrt(1 + t * r2)
        assert mixture == pytest.approx(1 / ALPHA, rel=1e-9)
    # narrowest, relative to the fixed-horizon interval, near t_star; always wider than it
    t = np.array([100, 1000, 5000, 50_000, 500_000])
    ratio = sq.margin(t, ALPHA, 5000) / (Z / np.sqrt(t))
    assert (ratio > 1).all() and ratio.argmin() in (1, 2, 3)


def test_paired_aa_under_continuous_monitoring_keeps_alpha():
    """400 A/A shadows (same quality, independent noise), looked at after every label to 4000."""
    rng = np.random.default_rng(11)
    n = 4000
    sequential_fp = peeking_fp = 0
    for _ in range(4):
        risk = rng.normal(size=(100, n))
        y = rng.random((100, n)) < 1 / (1 + np.exp(-(risk - 1.0)))
        a = 1 / (1 + np.exp(-(risk + rng.normal(size=(100, n)) - 1.0)))
        b = 1 / (1 + np.exp(-(risk + rng.normal(size=(100, n)) - 1.0)))
        d = sq.per_request_logloss(y, a) - sq.per_request_logloss(y, b)
        t, mean, half = sq.paired_halfwidths(d, ALPHA, 5000)
        watch = t >= 100
        excluded = ((mean - half > 0) | (mean + half < 0))[:, watch]
        sequential_fp += int(excluded.any(axis=1).sum())
        var = np.maximum(np.cumsum(d * d, axis=1) / t - mean * mean, 1e-300)
        peeking_fp += int((np.abs(mean / np.sqrt(var / t))[:, watch] > Z).any(axis=1).sum())
    # expected at most 5% = 20 of 400 (binomial sd 4.4); peeking at a fixed-horizon test
    # after every label stops wrongly in far more
    assert sequential_fp <= 26, sequential_fp
    assert peeking_fp >= 100, peeking_fp


def test_unpaired_aa_conversion_keeps_alpha_and_peeking_does_not():
    rng = np.random.default_rng(12)
    n, fp, peek = 4000, 0, 0
    for _ in range(4):
        x = (rng.random((100, n)) < 0.2).astype(float)
        in_b = rng.random((100, n)) < 0.3  # a 30% arm
        na, nb, diff, half, _ = sq.unpaired_halfwidths(x, in_b, ALPHA, 5000)
        ok = (na >= 100) & (nb >= 100)
        fp += int((((diff - half > 0) | (diff + half < 0)) & ok).any(axis=1).sum())
        se = half / sq.margin(na + nb, ALPHA, 5000) / np.sqrt(na + nb)
        with np.errstate(divide="ignore", invalid="ignore"):
            peek += int(((np.abs(diff / se) > Z) & ok & (se > 0)).any(axis=1).sum())
    assert fp <= 26, fp
    assert peek >= 80, peek


def test_a_truly_better_shadow_is_found_better_and_never_worse():
    words = []
    for seed in range(60):
        seq = sq.paired_sequence(_loss_diffs(6000, (1.5, 0.8), seed), alpha=ALPHA)
        words.append(seq.decision)
        if seq.decision == sq.BETTER:
            assert 100 <= seq.decided_at <= 6000
            lab, lo, _ = next(p for p in seq.path if p[0] == seq.decided_at)
            assert lo > 0
    assert words.count(sq.BETTER) >= 57 and sq.WORSE not in words


def test_a_truly_worse_arm_is_found_worse_on_logloss_and_conversion():
    worse = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        ya, yb = rng.random(3000) < 0.30, rng.random(1500) < 0.22  # the arm converts less
        ta, tb = rng.random(3000), rng.random(1500)
        seq = sq.unpaired_sequence(
            ya.astype(float), ta, yb.astype(float), tb, "positive_rate", higher_is_better=True
        )
        worse += seq.decision == sq.WORSE
        assert seq.decision != sq.BETTER
    assert worse >= 32


def test_no_decision_before_min_labels_and_the_path_is_reported():
    d = np.full(99, 1.0) + np.random.default_rng(0).normal(scale=0.01, size=99)
    seq = sq.paired_sequence(d, min_labels=100)
    assert seq.decision == sq.KEEP and seq.path == [] and "at least 100" in seq.sentence()
    seq = sq.paired_sequence(np.r_[d, d], min_labels=100, points=10)
    assert seq.decision == sq.BETTER and seq.decided_at == 100
    labels = [p[0] for p in seq.path]
    assert labels == sorted(labels) and labels[-1] == 198 and 100 in labels
    assert all(lo <= hi for _, lo, hi in seq.path)
    empty = sq.paired_sequence(np.array([]))
    assert empty.labels == 0 and empty.decision == sq.KEEP
    assert sq.paired_sequence(np.zeros(500)).decision == sq.KEEP  # identical models
