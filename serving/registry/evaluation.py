"""Holdout metrics of a binary model: AUC, logloss, calibration, the ROC curve, per segment.

One home for the numbers ``tessera train`` records, the review gates check and the model card
plots, so the three can never disagree. Pure numpy/scipy over (label, score) arrays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

CALIBRATION_BINS = 10


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Rank AUC with ties averaged (Mann-Whitney U); NaN without both classes."""
    from scipy.stats import rankdata

    y = np.asarray(y)
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    r = rankdata(p)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    if len(y) == 0:
        return math.nan
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def reliability(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Per equal-width score bin: count, mean score, positive rate (empty bins left out)."""
    p = np.asarray(p, dtype=float)
    y = np.asarray(y, dtype=float)
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    ssum = np.bincount(idx, weights=p, minlength=bins)
    ysum = np.bincount(idx, weights=y, minlength=bins)
    return [
        {"lo": b / bins, "hi": (b + 1) / bins, "count": int(count[b]),
         "mean_score": float(ssum[b] / count[b]), "positive_rate": float(ysum[b] / count[b])}
        for b in range(bins) if count[b]
    ]


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error: count-weighted mean |positive rate - mean score| per bin."""
    table = reliability(y, p, bins)
    n = sum(b["count"] for b in table)
    if not n:
        return math.nan
    return float(sum(b["count"] * abs(b["positive_rate"] - b["mean_score"]) for b in table) / n)


def roc_points(y: np.ndarray, p: np.ndarray, max_points: int = 200) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) from (0, 0) to (1, 1), at most ``max_points``."""
    y = np.asarray(y) == 1
    n1, n0 = int(y.sum()), int((~y).sum())
    if not n1 or not n0:
        return []
    order = np.argsort(-np.asarray(p), kind="mergesort")
    ps, ys = np.asarray(p)[order], y[order]
    last = np.r_[np.nonzero(np.diff(ps))[0], len(ps) - 1]  # one point per distinct score
    tpr = np.cumsum(ys)[last] / n1
    fpr = np.cumsum(~ys)[last] / n0
    if len(last) > max_points:
        keep = np.unique(np.linspace(0, len(last) - 1, max_points).astype(int))
        tpr, fpr = tpr[keep], fpr[keep]
    return [(0.0, 0.0), *zip(fpr.tolist(), tpr.tolist(), strict=True)]


def summary(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"auc": auc(y, p), "logloss": logloss(y, p),
            "calibration_error": calibration_error(y, p),
            "positive_rate": float(np.mean(y)) if len(y) else math.nan}


def by_segment(y: np.ndarray, p: np.ndarray, segment: np.ndarray, min_rows: int = 1
               ) -> dict[str, dict[str, Any]]:
    """Per value of ``segment``: rows, AUC, calibration error and positive rate."""
    seg = np.asarray(segment).astype(str)
    out = {}
    for value in sorted(set(seg.tolist())):
        m = seg == value
        if m.sum() < min_rows:
            continue
        out[value] = {"rows": int(m.sum()), **summary(y[m], p[m])}
    return out
