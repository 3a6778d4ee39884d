"""Statistics for comparing a challenger with the champion. Pure numpy/scipy, no I/O.

Everything takes numpy arrays: ``y`` holds 0/1 labels, ``p``/``s`` scores (probabilities for
logloss, Brier and calibration). Paired comparisons (a shadow scored the same requests as the
champion) use DeLong's test on the same labels; unpaired ones (A/B arms served different
entities) add the two independent DeLong variances. Bootstrap CIs draw multinomial counts, so a
replicate costs a few passes over pre-sorted scores instead of a resort.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

# -- point metrics ---------------------------------------------------------------------------


def auc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN when one class is absent."""
    y = np.asarray(y, dtype=bool)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = sps.rankdata(s)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def logloss(y: np.ndarray, p: np.ndarray, eps: float = 1e-15) -> float:
    """Mean negative log-likelihood of the labels; scores are clipped to [eps, 1-eps]."""
    p = np.clip(np.asarray(p, dtype=float), eps, 1 - eps)
    y = np.asarray(y, dtype=float)
    if y.size == 0:
        return math.nan
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of the probability against the 0/1 label."""
    if len(y) == 0:
        return math.nan
    return float(np.mean((np.asarray(p, dtype=float) - np.asarray(y, dtype=float)) ** 2))


def reliability_bins(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict]:
    """Calibration table: per equal-width score bin, its count, mean score and positive rate."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    ssum = np.bincount(idx, weights=p, minlength=bins)
    ysum = np.bincount(idx, weights=y, minlength=bins)
    out = []
    for b in range(bins):
        if count[b] == 0:
            continue
        out.append(
            {
                "lo": b / bins,
                "hi": (b + 1) / bins,
                "count": int(count[b]),
                "mean_score": float(ssum[b] / count[b]),
                "positive_rate": float(ysum[b] / count[b]),
            }
        )
    return out


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two models' scores on the same requests."""
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def agreement(a: np.ndarray, b: np.ndarray, threshold: float) -> float:
    """Share of requests where both models take the same decision at ``threshold``."""
    if len(a) == 0:
        return math.nan
    return float(np.mean((np.asarray(a) >= threshold) == (np.asarray(b) >= threshold)))


def latency_percentiles(ms: np.ndarray) -> dict[str, float]:
    """p50/p99 of latencies in milliseconds."""
    if len(ms) == 0:
        return {"p50_ms": math.nan, "p99_ms": math.nan}
    p50, p99 = np.percentile(ms, [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99)}


# -- DeLong ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AucTest:
    """Difference ``auc_b - auc_a`` with its standard error and two-sided p-value."""

    auc_a: float
    auc_b: float
    diff: float
    se: float
    z: float
    p_value: float


def _delong_components(
    y: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fast DeLong (Sun & Xu 2014): AUCs and the structural components V10, V01 per model.

    ``scores`` has shape (k, n). Returns auc (k,), v10 (k, n_pos), v01 (k, n_neg).
    """
    y = np.asarray(y, dtype=bool)
    pos = scores[:, y]
    neg = scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    tx = sps.rankdata(pos, axis=1)
    ty = sps.rankdata(neg, axis=1)
    tz = sps.rankdata(scores, axis=1)
    tz_pos = tz[:, y]
    tz_neg = tz[:, ~y]
    aucs = (tz_pos.sum(axis=1) / m - (m + 1) / 2) / n
    v10 = (tz_pos - tx) / n
    v01 = 1.0 - (tz_neg - ty) / m
    return aucs, v10, v01


def _delong_cov(v10: np.ndarray, v01: np.ndarray) -> np.ndarray:
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10))
    s01 = np.atleast_2d(np.cov(v01))
    return s10 / m + s01 / n


def _two_sided(z: float) -> float:
    return float(2 * sps.norm.sf(abs(z)))


def _test(auc_a: float, auc_b: float, var: float) -> AucTest:
    diff = auc_b - auc_a
    se = math.sqrt(max(var, 0.0))
    if se == 0.0:
        z, p = 0.0, 1.0
    else:
        z = diff / se
        p = _two_sided(z)
    return AucTest(float(auc_a), float(auc_b), float(diff), se, float(z), p)


def delong_paired(y: np.ndarray, s_a: np.ndarray, s_b: np.ndarray) -> AucTest:
    """DeLong test of AUC(b) - AUC(a) when both models scored the same labelled requests."""
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return AucTest(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    aucs, v10, v01 = _delong_components(y, np.vstack([s_a, s_b]).astype(float))
    cov = _delong_cov(v10, v01)
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    return _test(aucs[0], aucs[1], var)


def delong_unpaired(y_a: np.ndarray, s_a: np.ndarray, y_b: np.ndarray, s_b: np.ndarray) -> AucTest:
    """DeLong test of AUC(b) - AUC(a) on two independent samples (A/B arms)."""
    parts = []
    for y, s in ((y_a, s_a), (y_b, s_b)):
        y = np.asarray(y, dtype=bool)
        if y.all() or not y.any():
            return AucTest(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
        a, v10, v01 = _delong_components(y, np.asarray(s, dtype=float)[None, :])
        parts.append((a[0], _delong_cov(v10, v01)[0, 0]))
    return _test(parts[0][0], parts[1][0], parts[0][1] + parts[1][1])


# -- proportions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProportionTest:
    """Difference ``rate_b - rate_a`` of a business metric with its z-test p-value."""

    rate_a: float
    rate_b: float
    diff: float
    se: float
    z: float
    p_value: float


def two_proportion_z(x_a: int, n_a: int, x_b: int, n_b: int) -> ProportionTest:
    """Pooled two-proportion z-test (independent samples) of ``x_b/n_b - x_a/n_a``."""
    if n_a == 0 or n_b == 0:
        return ProportionTest(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    ra, rb = x_a / n_a, x_b / n_b
    pooled = (x_a + x_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return ProportionTest(ra, rb, rb - ra, 0.0, 0.0, 1.0)
    z = (rb - ra) / se
    return ProportionTest(ra, rb, rb - ra, se, z, _two_sided(z))


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> ProportionTest:
    """Paired test of decision accuracy (same requests): McNemar's z on discordant pairs."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    n = a.size
    if n == 0:
        return ProportionTest(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    only_b = int(np.sum(b & ~a))
    only_a = int(np.sum(a & ~b))
    ra, rb = float(a.mean()), float(b.mean())
    disc = only_a + only_b
    if disc == 0:
        return ProportionTest(ra, rb, rb - ra, 0.0, 0.0, 1.0)
    z = (only_b - only_a) / math.sqrt(disc)
    return ProportionTest(ra, rb, rb - ra, math.sqrt(disc) / n, z, _two_sided(z))


# -- bootstrap -------------------------------------------------------------------------------


class _SortedAuc:
    """Weighted AUC over fixed scores: sort once, then each weight vector costs O(n).

    Weights are given in this model's score order (``w[i]`` weights the i-th smallest score).
    """

    def __init__(self, y: np.ndarray, s: np.ndarray) -> None:
        order = np.argsort(s, kind="stable")
        s_sorted = np.asarray(s)[order]
        self.order = order
        self.pos = np.asarray(y, dtype=float)[order]
        self.neg = 1.0 - self.pos
        starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
        self.starts = starts if starts.size < s_sorted.size else None

    def __call__(self, w: np.ndarray) -> float:
        wp = w * self.pos
        wn = w * self.neg
        if self.starts is None:  # no ties: a positive beats every negative before it
            below = np.cumsum(wn)
            num = float((wp * below).sum())
            tot_n = below[-1]
        else:
            gp = np.add.reduceat(wp, self.starts)
            gn = np.add.reduceat(wn, self.starts)
            below = np.cumsum(gn)
            num = float((gp * (below - 0.5 * gn)).sum())
            tot_n = below[-1]
        den = wp.sum() * tot_n
        return num / den if den > 0 else math.nan


def _ci(samples: np.ndarray, alpha: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.percentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return (float(lo), float(hi))


def _wmean(w: np.ndarray, v: np.ndarray, n: int) -> float:
    # not ``w @ v``: once LightGBM's OpenMP runtime is loaded, OpenBLAS's dot gets ~40x slower
    return float((w * v).sum()) / n


def _losses(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pc = np.clip(p, 1e-15, 1 - 1e-15)
    return -(y * np.log(pc) + (1 - y) * np.log1p(-pc)), (p - y) ** 2


def bootstrap_cis(
    y: np.ndarray,
    p: np.ndarray,
    p_ref: np.ndarray | None = None,
    reps: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile CIs for AUC, logloss, Brier (and their differences vs ``p_ref`` if paired).

    Each replicate is a multinomial resample drawn as counts (``bincount`` of n uniform
    indices), directly in ``p``'s score order: an index drawn uniformly stays uniform under a
    fixed permutation, so no per-replicate sort or gather is needed for ``p``. With ``p_ref``
    the same counts are permuted into the reference's order (a paired bootstrap).
    """
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    n = y.size
    if n == 0:
        return {}
    rng = np.random.default_rng(seed)
    a_auc = _SortedAuc(y, p)
    ll, br = (v[a_auc.order] for v in _losses(y, p))
    if p_ref is not None:
        r = np.asarray(p_ref, dtype=float)
        r_auc = _SortedAuc(y, r)
        inv = np.empty(n, dtype=np.int64)
        inv[a_auc.order] = np.arange(n)
        to_ref = inv[r_auc.order]  # ref-sorted position j holds a-sorted row to_ref[j]
        ll_r, br_r = (v[a_auc.order] for v in _losses(y, r))
    out: dict[str, list[float]] = {}
    for _ in range(reps):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
        vals = {"auc": a_auc(w), "logloss": _wmean(w, ll, n), "brier": _wmean(w, br, n)}
        if p_ref is not None:
            vals["auc_diff"] = vals["auc"] - r_auc(w[to_ref])
            vals["logloss_diff"] = vals["logloss"] - _wmean(w, ll_r, n)
            vals["brier_diff"] = vals["brier"] - _wmean(w, br_r, n)
        for key, v in vals.items():
            out.setdefault(key, []).append(v)
    return {key: _ci(np.asarray(v), alpha) for key, v in out.items()}


# -- verdict ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """The answer in plain words, and how many more labels would settle it."""

    word: str  # "better" | "worse" | "no difference yet"
    sentence: str
    labels_needed: int | None


def labels_needed(
    n: int, diff: float, se: float, alpha: float = 0.05, power: float = 0.8, mde: float = 0.005
) -> int | None:
    """More labels needed to detect ``max(|diff|, mde)`` at ``alpha`` with ``power``.

    The standard error shrinks as 1/sqrt(n), so n_required = n * ((z_a + z_b) * se / d)^2.
    """
    if n <= 0 or not math.isfinite(se) or se <= 0:
        return None
    d = max(abs(diff) if math.isfinite(diff) else 0.0, mde)
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    required = n * (z * se / d) ** 2
    return max(0, math.ceil(required - n))


def verdict(
    test: AucTest,
    n_labels: int,
    alpha: float = 0.05,
    power: float = 0.8,
    mde: float = 0.005,
    who: str = "challenger",
) -> Verdict:
    """better / worse / no difference yet, from the AUC test at significance ``alpha``."""
    if not math.isfinite(test.p_value):
        return Verdict(
            "no difference yet",
            f"not enough labelled data with both classes to compare the {who} yet",
            None,
        )
    if test.p_value < alpha:
        word = "better" if test.diff > 0 else "worse"
        return Verdict(
            word,
            f"the {who} is {word}: AUC {test.auc_b:.4f} vs {test.auc_a:.4f} "
            f"(diff {test.diff:+.4f}, p={test.p_value:.2g} < {alpha})",
            0,
        )
    more = labels_needed(n_labels, test.diff, test.se, alpha, power, mde)
    tail = ""
    if more is not None:
        tail = (
            f"; about {more} more labels to detect a difference of "
            f"{max(abs(test.diff), mde):.4f} with {power:.0%} power"
        )
    return Verdict(
        "no difference yet",
        f"no significant difference yet: AUC {test.auc_b:.4f} vs {test.auc_a:.4f} "
        f"(diff {test.diff:+.4f}, p={test.p_value:.2g}){tail}",
        more,
    )
