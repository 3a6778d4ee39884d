"""Holdout metrics of a binary model: AUC, logloss, calibration, the ROC curve, per segment.

One home for the numbers ``tessera train`` records, the review gates check and the model card
plots, so the three can never disagree; and the same statistics the experiment report and the
segment monitor use (``serving.experiments.stats`` / ``segments``), so a model's card and its
live report measure alike.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from serving.experiments import segments, stats

CALIBRATION_BINS = 10


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Rank AUC with ties averaged; NaN without both classes."""
    return stats.auc(np.asarray(y) >= 0.5, p)


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    return stats.logloss(y, p)


def reliability(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Per equal-width score bin: count, mean score, positive rate (empty bins left out)."""
    return stats.reliability_bins(y, p, bins)


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error: count-weighted mean |positive rate - mean score| per bin."""
    return segments.calibration_error(y, p, bins)


def roc_points(y: np.ndarray, p: np.ndarray, max_points: int = 200) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) from (0, 0) to (1, 1), at most ``max_points``."""
    y = np.asarray(y) >= 0.5
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


def by_segment(y: np.ndarray, p: np.ndarray, segment: np.ndarray, min_rows: int = 50
               ) -> dict[str, Any]:
    """``serving.experiments.segments.segment_metrics`` over holdout arrays: per segment its
    rows, AUC, calibration error, positive rate and whether it is judged (enough rows, both
    classes), plus the best-minus-worst gaps."""
    import polars as pl

    frame = pl.DataFrame({"label": np.asarray(y, dtype=float), "score": np.asarray(p, float),
                          "segment": np.asarray(segment).astype(str)})
    return segments.segment_metrics(frame, "segment", min_labelled=min_rows)
