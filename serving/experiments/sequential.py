"""Anytime-valid comparisons: confidence sequences you may look at after every label.

A fixed-horizon p-value is valid at one pre-planned look; an experiment report that is read
after every batch of labels and stopped at the first "better" is wrong far more often than
alpha. A *confidence sequence* is a sequence of intervals that contains the true difference at
every sample size simultaneously with probability >= 1 - alpha, so stopping at the first
interval that excludes zero keeps the false-positive rate at alpha however often one looks.

We use the asymptotic confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas
("Time-uniform central limit theory and asymptotic confidence sequences", 2021), the same
construction GrowthBook's sequential testing uses: the two-sided normal-mixture boundary
applied to the running mean with the running variance plugged in,

    mean_t +- sigma_t * sqrt( 2 (t rho^2 + 1) / (t^2 rho^2) * log( sqrt(t rho^2 + 1) / alpha ) )

with ``rho^2 = (-2 log alpha + log(-2 log alpha + 1)) / t_star``, which makes the interval
narrowest around ``t_star`` labels (it stays valid at every other size). Everything here is
vectorised numpy over the whole path, so the report can evaluate every label.

Assumptions (also in docs/experiments.md): observations are independent and identically
distributed in the order they are fed (prediction time; the order must not depend on the
outcomes), with a finite variance; the guarantee is asymptotic (a CLT approximation), so no
decision is taken before ``min_labels``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

BETTER, WORSE, KEEP = "better", "worse", "keep collecting"


def rho_squared(alpha: float, t_star: float) -> float:
    """Mixture tuning that makes the sequence tightest at ``t_star`` observations."""
    la = -2.0 * math.log(alpha)
    return (la + math.log(la + 1.0)) / t_star


def margin(t: np.ndarray | float, alpha: float, t_star: float) -> np.ndarray:
    """Half-width of the unit-variance confidence sequence after ``t`` observations."""
    t = np.asarray(t, dtype=float)
    r2 = rho_squared(alpha, t_star)
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.sqrt(2.0 * (t * r2 + 1.0) / (t * t * r2) * np.log(np.sqrt(t * r2 + 1.0) / alpha))
    return np.where(t > 0, m, np.inf)


@dataclass(frozen=True)
class Sequence:
    """A confidence sequence of ``improvement`` (positive: the challenger is better).

    ``path`` is ``[(labels, lower, upper), ...]`` at up to ``points`` sizes plus the first
    decisive one; ``decided_at`` the labels at the first look whose interval excluded zero.
    """

    metric: str
    meaning: str
    labels: int
    estimate: float
    lower: float
    upper: float
    decision: str
    decided_at: int | None
    alpha: float
    t_star: float
    min_labels: int
    path: list[tuple[int, float, float]] = field(default_factory=list)

    def sentence(self, who: str = "challenger") -> str:
        head = f"{self.metric} {self.meaning}"
        if self.labels == 0:
            return f"no labelled {who} data yet"
        ci = f"[{self.lower:+.4g}, {self.upper:+.4g}]" if math.isfinite(self.lower) else "[-, +]"
        now = f"{head}: {self.estimate:+.4g}, {1 - self.alpha:.0%} confidence sequence {ci}"
        if self.decision == KEEP:
            if self.labels < self.min_labels:
                return f"keep collecting: {self.labels} labels of at least {self.min_labels}; {now}"
            return f"keep collecting ({self.labels} labels): {now}"
        return f"the {who} is {self.decision} (decided at {self.decided_at} labels): {now}"

    def to_dict(self, who: str = "challenger") -> dict:
        return {
            "kind": "anytime-valid confidence sequence",
            "metric": self.metric,
            "meaning": self.meaning,
            "labels": self.labels,
            "estimate": self.estimate,
            "lower": self.lower,
            "upper": self.upper,
            "decision": self.decision,
            "decided_at": self.decided_at,
            "alpha": self.alpha,
            "t_star": self.t_star,
            "min_labels": self.min_labels,
            "path": [list(p) for p in self.path],
            "sentence": self.sentence(who),
        }


def _first_decision(lo: np.ndarray, hi: np.ndarray, ok: np.ndarray) -> tuple[str, int | None]:
    hit = ok & ((lo > 0) | (hi < 0))
    if not hit.any():
        return KEEP, None
    i = int(np.argmax(hit))
    return (BETTER if lo[i] > 0 else WORSE), i


def _build(
    metric: str,
    meaning: str,
    n: np.ndarray,
    est: np.ndarray,
    half: np.ndarray,
    ok: np.ndarray,
    alpha: float,
    t_star: float,
    min_labels: int,
    points: int,
) -> Sequence:
    if n.size == 0:
        nan = math.nan
        return Sequence(metric, meaning, 0, nan, nan, nan, KEEP, None, alpha, t_star, min_labels)
    lo, hi = est - half, est + half
    lo = np.where(ok, lo, -np.inf)
    hi = np.where(ok, hi, np.inf)
    decision, i = _first_decision(lo, hi, ok)
    idx = np.unique(np.linspace(0, n.size - 1, num=min(points, n.size)).astype(int))
    if i is not None:
        idx = np.union1d(idx, [i])
    idx = idx[ok[idx]]
    path = [(int(n[j]), float(lo[j]), float(hi[j])) for j in idx]
    return Sequence(
        metric,
        meaning,
        int(n[-1]),
        float(est[-1]),
        float(lo[-1]),
        float(hi[-1]),
        decision,
        None if i is None else int(n[i]),
        alpha,
        t_star,
        min_labels,
        path,
    )


def _running_var(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts, running means and running (population) variances along axis -1."""
    n = np.arange(1, x.shape[-1] + 1, dtype=float)
    mean = np.cumsum(x, axis=-1) / n
    var = np.cumsum(x * x, axis=-1) / n - mean * mean
    return n, mean, np.maximum(var, 0.0)


def paired_halfwidths(
    d: np.ndarray, alpha: float = 0.05, t_star: float = 5000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Running mean of paired differences ``d`` (last axis = time) and its CS half-width."""
    n, mean, var = _running_var(np.asarray(d, dtype=float))
    return n, mean, np.sqrt(var) * margin(n, alpha, t_star)


def paired_sequence(
    d: np.ndarray,
    metric: str = "logloss",
    meaning: str = "champion minus challenger",
    alpha: float = 0.05,
    t_star: float = 5000,
    min_labels: int = 100,
    points: int = 60,
) -> Sequence:
    """Confidence sequence of the mean of per-request differences, in the order given.

    ``d`` is, per labelled request both models scored, how much better the challenger did
    (e.g. the champion's logloss minus the challenger's on that request).
    """
    d = np.asarray(d, dtype=float)
    n, mean, half = paired_halfwidths(d, alpha, t_star)
    return _build(
        metric, meaning, n, mean, half, n >= min_labels, alpha, t_star, min_labels, points
    )


def unpaired_halfwidths(
    x: np.ndarray, in_b: np.ndarray, alpha: float = 0.05, t_star: float = 5000
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Running ``mean_b - mean_a`` of two independent streams interleaved in time order.

    ``x`` holds each observation's value, ``in_b`` whether it came from arm b (last axis =
    time). Returns (n_a, n_b, diff, half-width, total n). The variance of the difference
    ``s_a^2/n_a + s_b^2/n_b`` is scaled to one observation of the pooled stream
    (``* (n_a + n_b)``), as GrowthBook does, and the unit margin is taken at ``n_a + n_b``.
    """
    x = np.asarray(x, dtype=float)
    b = np.asarray(in_b, dtype=bool)
    a = ~b
    na = np.cumsum(a, axis=-1).astype(float)
    nb = np.cumsum(b, axis=-1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ma = np.cumsum(np.where(a, x, 0.0), axis=-1) / na
        mb = np.cumsum(np.where(b, x, 0.0), axis=-1) / nb
        va = np.maximum(np.cumsum(np.where(a, x * x, 0.0), axis=-1) / na - ma * ma, 0.0)
        vb = np.maximum(np.cumsum(np.where(b, x * x, 0.0), axis=-1) / nb - mb * mb, 0.0)
        n = na + nb
        var_diff = va / na + vb / nb
        half = np.sqrt(var_diff * n) * margin(n, alpha, t_star)
    return na, nb, mb - ma, half, n


def unpaired_sequence(
    x_a: np.ndarray,
    ts_a: np.ndarray,
    x_b: np.ndarray,
    ts_b: np.ndarray,
    metric: str,
    higher_is_better: bool,
    alpha: float = 0.05,
    t_star: float = 5000,
    min_labels: int = 100,
    points: int = 60,
) -> Sequence:
    """Confidence sequence of the challenger's improvement over the champion on independent
    samples (A/B arms), with observations merged in time order. No decision until each side
    has ``min_labels`` observations."""
    x = np.concatenate([np.asarray(x_a, dtype=float), np.asarray(x_b, dtype=float)])
    in_b = np.r_[np.zeros(len(x_a), dtype=bool), np.ones(len(x_b), dtype=bool)]
    order = np.argsort(np.concatenate([ts_a, ts_b]), kind="stable")
    x, in_b = x[order], in_b[order]
    meaning = "challenger minus champion" if higher_is_better else "champion minus challenger"
    if x.size == 0:
        return _build(metric, meaning, x, x, x, x.astype(bool), alpha, t_star, min_labels, points)
    na, nb, diff, half, n = unpaired_halfwidths(x, in_b, alpha, t_star)
    est = diff if higher_is_better else -diff
    ok = (na >= min_labels) & (nb >= min_labels) & np.isfinite(half)
    est = np.where(ok, est, np.nan)
    return _build(
        metric, meaning, n, est, np.where(ok, half, np.inf), ok, alpha, t_star, min_labels, points
    )


def per_request_logloss(y: np.ndarray, p: np.ndarray, eps: float = 1e-15) -> np.ndarray:
    """Each labelled request's negative log-likelihood (the mean is ``stats.logloss``)."""
    pc = np.clip(np.asarray(p, dtype=float), eps, 1 - eps)
    y = np.asarray(y, dtype=float)
    return -(y * np.log(pc) + (1 - y) * np.log1p(-pc))
