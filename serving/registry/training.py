"""Train a LightGBM model from a point-in-time training set and describe it for the registry.

Deterministic by construction: the seed feeds every LightGBM seed, ``deterministic`` and
``force_row_wise`` are on, rows are sorted by time (then by every other column) before training,
so the same Parquet file and seed give the same model text byte for byte.

Holdout is by time (the newest ``holdout`` share of rows), because a random split leaks the
future into training for features computed from event streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from features.errors import RegistryError
from serving.monitoring.reference import build_reference

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "num_iterations": 300,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "verbosity": -1,
}


def column_ref(column: str) -> str | None:
    """Feature ref of a training-set column: ``view:feature`` or ``view__feature``; else None."""
    if ":" in column:
        return column
    view, sep, feat = column.partition("__")
    return f"{view}:{feat}" if sep and view and feat else None


def fingerprint_of(path: str | Path) -> str | None:
    """The training set's fingerprint from its Parquet key-value metadata, if it carries one."""
    meta = pq.read_schema(path).metadata or {}
    for k, v in meta.items():
        if b"fingerprint" in k.lower():
            return v.decode()
    return None


@dataclass
class TrainResult:
    model_text: str
    features: list[str]
    metrics: dict[str, float]
    params: dict[str, Any]
    reference: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        import lightgbm

        return {
            "features": self.features,
            "params": self.params,
            "metrics": self.metrics,
            "lightgbm_version": lightgbm.__version__,
            "reference": self.reference,
            **self.extra,
        }


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """Rank AUC with ties averaged (Mann-Whitney U)."""
    from scipy.stats import rankdata

    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    r = rankdata(p)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _logloss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def train(
    path: str | Path,
    label: str,
    features: list[str] | None = None,
    timestamp: str = "ts",
    params: dict[str, Any] | None = None,
    seed: int = 0,
    holdout: float = 0.2,
) -> TrainResult:
    """Train on the oldest ``1 - holdout`` of rows, evaluate on the newest ``holdout``."""
    import lightgbm as lgb
    import polars as pl

    df = pl.read_parquet(path)
    if label not in df.columns:
        raise RegistryError(f"no label column {label!r} in {path}; columns: {df.columns}")
    if timestamp not in df.columns:
        raise RegistryError(
            f"no timestamp column {timestamp!r} in {path} (needed for the time-based holdout); "
            f"pass --timestamp COL. Columns: {df.columns}"
        )
    if features:
        by_ref = {column_ref(c) or c: c for c in df.columns}
        missing = [f for f in features if f not in by_ref]
        if missing:
            raise RegistryError(f"features {missing} are not columns of {path}")
        cols = [by_ref[f] for f in features]
        refs = list(features)
    else:
        cols = [c for c in df.columns if c not in (label, timestamp) and column_ref(c)]
        refs = [column_ref(c) for c in cols]
        if not cols:
            raise RegistryError(
                f"no feature columns in {path}: name them view:feature or view__feature, or "
                "pass --features"
            )
    if not 0 < holdout < 1:
        raise RegistryError(f"holdout must be in (0, 1), got {holdout}")
    df = df.sort([timestamp, *[c for c in df.columns if c != timestamp]], nulls_last=True)
    x = df.select([pl.col(c).cast(pl.Float64) for c in cols]).to_numpy()
    y = df[label].cast(pl.Float64).to_numpy()
    if np.isnan(y).any():
        raise RegistryError(f"label {label!r} has null values; drop or fill those rows first")
    cut = int(len(df) * (1 - holdout))
    if cut < 1 or cut >= len(df):
        raise RegistryError(f"{len(df)} rows are too few for a {holdout:.0%} time holdout")
    p = {**DEFAULT_PARAMS, **(params or {})}
    p.update(
        seed=seed, bagging_seed=seed, feature_fraction_seed=seed, data_random_seed=seed,
        deterministic=True, force_row_wise=True, num_threads=p.get("num_threads", 1),
    )
    rounds = int(p.pop("num_iterations", p.pop("n_estimators", 100)))
    train_set = lgb.Dataset(x[:cut], y[:cut], feature_name=[_safe(r) for r in refs],
                            params={"verbosity": -1}, free_raw_data=False)
    booster = lgb.train(p, train_set, num_boost_round=rounds)
    test_scores = booster.predict(x[cut:])
    metrics = {
        "auc": _auc(y[cut:], test_scores),
        "logloss": _logloss(y[cut:], test_scores),
        "train_rows": cut,
        "holdout_rows": len(df) - cut,
        "holdout_from": str(df[timestamp][cut]),
    }
    train_scores = booster.predict(x[:cut])
    reference = build_reference(
        {r: x[:cut, j] for j, r in enumerate(refs)}, score=train_scores
    ).to_dict()
    p["num_iterations"] = rounds
    return TrainResult(booster.model_to_string(), refs, metrics, p, reference)


def _safe(ref: str) -> str:
    """LightGBM feature names cannot hold ':'; the registry keeps the real refs in order."""
    return ref.replace(":", "__")
