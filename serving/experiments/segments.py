"""Metrics by segment (a spine or request column such as ``country``), and segment degradation.

A model can get worse for one segment while the total barely moves, because the segment is
small or another one improved. ``segment_metrics`` gives per-segment AUC, calibration error,
positive rate and mean score plus the gap between the best and the worst segment;
``segment_degradation`` compares two such summaries (a baseline and a recent window) and names
the segments that degraded while the total did not. Input is any frame with a label, a score and
the segment column (the joined prediction log, a holdout, a training set's predictions).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from serving.experiments import stats
from serving.experiments.errors import ExperimentError


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the row-weighted mean |mean score - positive rate| over
    equal-width score bins."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if y.size == 0:
        return math.nan
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    gap = np.abs(
        np.bincount(idx, weights=p, minlength=bins) - np.bincount(idx, weights=y, minlength=bins)
    )
    return float(gap.sum() / y.size)  # sum over bins of count/n * |mean p - mean y|


def _summary(y: np.ndarray, p: np.ndarray) -> dict:
    return {
        "labelled": int(y.size),
        "auc": stats.auc(y, p),
        "calibration_error": calibration_error(y, p),
        "positive_rate": float(y.mean()) if y.size else math.nan,
        "mean_score": float(p.mean()) if p.size else math.nan,
    }


def segment_metrics(
    frame: pl.DataFrame,
    segment_col: str,
    label_col: str = "label",
    score_col: str = "score",
    min_labelled: int = 50,
) -> dict:
    """Per-segment metrics of labelled rows, the total, and the best-minus-worst gaps.

    Segments with fewer than ``min_labelled`` labelled rows (or one class only, for the AUC)
    are listed but not counted in the gaps: their numbers are noise. This is the function the
    registry's per-segment gates may call on a holdout frame as well.
    """
    for col in (segment_col, label_col, score_col):
        if col not in frame.columns:
            raise ExperimentError(
                f"no column {col!r} to compute segment metrics; columns: {frame.columns}"
            )
    lab = frame.filter(pl.col(label_col).is_not_null() & pl.col(score_col).is_not_null())
    y_all = lab[label_col].to_numpy() >= 0.5
    p_all = lab[score_col].to_numpy().astype(float)
    seg = lab[segment_col].cast(pl.String).fill_null("(null)").to_numpy()
    rows = []
    for value in sorted(set(seg.tolist())):
        m = seg == value
        row = {"segment": value, **_summary(y_all[m], p_all[m])}
        row["judged"] = row["labelled"] >= min_labelled and math.isfinite(row["auc"])
        rows.append(row)
    judged = [r for r in rows if r["judged"]]
    gaps: dict[str, float | None] = {}
    worst: dict[str, str | None] = {}
    for key, low_is_bad in (("auc", True), ("calibration_error", False), ("positive_rate", None)):
        vals = [(r[key], r["segment"]) for r in judged if math.isfinite(r[key])]
        gaps[key] = (max(vals)[0] - min(vals)[0]) if len(vals) >= 2 else None
        if low_is_bad is not None and vals:
            worst[key] = (min(vals) if low_is_bad else max(vals))[1]
    return {
        "segment_col": segment_col,
        "min_labelled": min_labelled,
        "total": _summary(y_all, p_all),
        "segments": rows,
        "gap": gaps,
        "worst": worst,
    }


@dataclass(frozen=True)
class SegmentAlert:
    """One segment that degraded against the baseline while the total held."""

    segment_col: str
    segment: str
    metric: str  # "auc" | "calibration_error"
    baseline: float
    now: float
    change: float  # worse is positive: AUC drop, or calibration error rise
    total_change: float
    labelled: int

    @property
    def column(self) -> str:
        return f"{self.segment_col}={self.segment}"

    def to_dict(self) -> dict:
        return {**asdict(self), "column": self.column}


def segment_degradation(
    now: dict,
    baseline: dict,
    max_auc_drop: float = 0.05,
    max_calibration_rise: float = 0.05,
    total_tolerance: float | None = None,
) -> list[SegmentAlert]:
    """Segments of ``now`` worse than in ``baseline`` (both from ``segment_metrics``) by more
    than the limits while the total got worse by no more than ``total_tolerance`` on the same
    metric (default: the metric's own limit, i.e. the total alone would not alert).

    When the total degraded as much, the whole model is drifting: that is the drift monitor's
    alert, not a segment's.
    """
    base = {r["segment"]: r for r in baseline["segments"] if r["judged"]}
    out = []
    checks = (("auc", max_auc_drop, -1.0), ("calibration_error", max_calibration_rise, 1.0))
    for metric, limit, sign in checks:
        total_change = sign * (now["total"][metric] - baseline["total"][metric])
        tolerance = limit if total_tolerance is None else total_tolerance
        if not math.isfinite(total_change) or total_change > tolerance:
            continue
        for r in now["segments"]:
            b = base.get(r["segment"])
            if not r["judged"] or b is None:
                continue
            change = sign * (r[metric] - b[metric])
            if math.isfinite(change) and change > limit:
                out.append(
                    SegmentAlert(
                        now["segment_col"],
                        r["segment"],
                        metric,
                        float(b[metric]),
                        float(r[metric]),
                        float(change),
                        float(total_change),
                        int(r["labelled"]),
                    )
                )
    return out


def with_segments(df: pl.DataFrame, segments: pl.DataFrame, segment_col: str) -> pl.DataFrame:
    """``df`` (joined predictions) plus ``segment_col`` from a lookup keyed by ``request_id``
    or ``entity_key`` (e.g. a request log or the spine: which user is in which country)."""
    if segment_col not in segments.columns:
        raise ExperimentError(f"the segment lookup has no column {segment_col!r}")
    key = next((k for k in ("request_id", "entity_key") if k in segments.columns), None)
    if key is None:
        raise ExperimentError(
            "the segment lookup needs a request_id or entity_key column to join on"
        )
    lookup = segments.select(pl.col(key).cast(pl.String), segment_col).unique(key, keep="last")
    return df.drop(segment_col, strict=False).join(lookup, on=key, how="left")
