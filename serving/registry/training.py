"""Train a LightGBM model from a point-in-time training set and describe it for the registry.

Deterministic by construction: the seed feeds every LightGBM seed, ``deterministic`` and
``force_row_wise`` are on, rows are sorted by time (then by every other column) before training,
so the same Parquet file and seed give the same model text byte for byte.

Holdout is by time (the newest ``holdout`` share of rows), because a random split leaks the
future into training for features computed from event streams.

Refusals (``TrainingRefused``, before or right after training): a label that does not fit the
objective (a continuous label for ``binary``), an unknown LightGBM parameter, a holdout smaller
than ``min_holdout_rows``, a NaN holdout metric. The holdout rows' labels, scores, features and
``segments`` columns are kept (``TrainResult.holdout``) so the registry can store them: the
review gates and the model card are computed from them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from features.errors import RegistryError
from serving.monitoring.reference import build_reference
from serving.registry import evaluation
from serving.registry.errors import TrainingRefused
from serving.registry.params import canonical

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "num_iterations": 300,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "verbosity": -1,
}

# the scorer, the experiment report and the gates read scores as probabilities of a 0/1 label
OBJECTIVES = {"binary": "binary", "cross_entropy": "cross_entropy", "xentropy": "cross_entropy"}

# a metric over fewer holdout rows is noise; $TESSERA_MIN_HOLDOUT_ROWS changes the default
DEFAULT_MIN_HOLDOUT_ROWS = 100

# at most this many holdout rows are kept with a version (evenly spaced in time)
MAX_STORED_HOLDOUT = 50_000

Progress = Callable[[int, int, dict[str, float]], None]  # (iteration, of, holdout metrics)


def min_holdout_rows_default() -> int:
    return int(os.environ.get("TESSERA_MIN_HOLDOUT_ROWS") or DEFAULT_MIN_HOLDOUT_ROWS)


def column_ref(column: str) -> str | None:
    """Feature ref of a training-set column: ``view:feature`` or ``view__feature``; else None."""
    if ":" in column:
        return column
    view, sep, feat = column.partition("__")
    return f"{view}:{feat}" if sep and view and feat else None


@dataclass
class TrainResult:
    model_text: str
    features: list[str]
    metrics: dict[str, float]
    params: dict[str, Any]
    reference: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    # holdout rows (label, score, ts, one column per feature ref, segment columns): stored by
    # ``ModelRegistry.register(..., holdout=...)`` for gates and the model card
    holdout: pa.Table | None = None

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


def check_label(y: np.ndarray, label: str, objective: str) -> None:
    """A 0/1 label for ``binary``, values in [0, 1] for ``cross_entropy``; both classes seen."""
    values = np.unique(y)
    if objective == "binary" and not np.isin(values, (0.0, 1.0)).all():
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if len(values) > 5 else "")
        raise TrainingRefused(
            f"label {label!r} has {len(values)} distinct values ({shown}) "
            "but objective 'binary' needs 0/1: derive a 0/1 column (e.g. amount > threshold), "
            "or use objective 'cross_entropy' for probabilities in [0, 1]",
            "label_objective",
        )
    if objective == "cross_entropy" and (values.min() < 0 or values.max() > 1):
        raise TrainingRefused(
            f"label {label!r} ranges {values.min():g}..{values.max():g} but objective "
            "'cross_entropy' needs values in [0, 1]", "label_objective"
        )


def _objective(p: dict[str, Any]) -> str:
    obj = str(p.get("objective", "binary"))
    if obj not in OBJECTIVES:
        raise TrainingRefused(
            f"objective {obj!r} is not supported: scores are served, compared and gated as "
            f"probabilities of a 0/1 label; use one of {sorted(set(OBJECTIVES.values()))}",
            "unsupported_objective",
        )
    return OBJECTIVES[obj]


def progress_callback(x: np.ndarray, y: np.ndarray, rounds: int, every: int,
                      report: Progress) -> Callable[[Any], None]:
    """A LightGBM callback reporting the holdout AUC/logloss every ``every`` iterations (it
    predicts the holdout itself, so the model's parameters, and its text, do not change)."""

    def cb(env) -> None:
        i = env.iteration + 1
        if i % every and i != rounds:
            return
        s = env.model.predict(x, num_iteration=i)
        report(i, rounds, {"auc": evaluation.auc(y, s), "logloss": evaluation.logloss(y, s)})

    cb.order = 30  # type: ignore[attr-defined]  # after LightGBM's own callbacks
    return cb


def train(
    path: str | Path,
    label: str,
    features: list[str] | None = None,
    timestamp: str = "ts",
    params: dict[str, Any] | None = None,
    seed: int = 0,
    holdout: float = 0.2,
    *,
    min_holdout_rows: int | None = None,
    segments: list[str] | tuple[str, ...] = (),
    progress: Progress | None = None,
    progress_every: int | None = None,
) -> TrainResult:
    """Train on the oldest ``1 - holdout`` of rows, evaluate on the newest ``holdout``."""
    import lightgbm as lgb
    import polars as pl

    min_rows = min_holdout_rows_default() if min_holdout_rows is None else min_holdout_rows
    p = canonical({**DEFAULT_PARAMS, **canonical(params or {})})
    objective = _objective(p)
    df = pl.read_parquet(path)
    if label not in df.columns:
        raise RegistryError(f"no label column {label!r} in {path}; columns: {df.columns}")
    if timestamp not in df.columns:
        raise RegistryError(
            f"no timestamp column {timestamp!r} in {path} (needed for the time-based holdout); "
            f"pass --timestamp COL. Columns: {df.columns}"
        )
    missing_seg = [s for s in segments if s not in df.columns]
    if missing_seg:
        raise RegistryError(f"segment columns {missing_seg} are not columns of {path}")
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
    try:
        y = df[label].cast(pl.Float64).to_numpy()
    except pl.exceptions.InvalidOperationError as e:
        raise TrainingRefused(f"label {label!r} is not numeric ({df[label].dtype}); give a 0/1 "
                              "column", "label_objective") from e
    if np.isnan(y).any():
        raise RegistryError(f"label {label!r} has null values; drop or fill those rows first")
    check_label(y, label, objective)
    cut = int(len(df) * (1 - holdout))
    if cut < 1 or cut >= len(df):
        raise TrainingRefused(f"{len(df)} rows are too few for a {holdout:.0%} time holdout",
                              "holdout_too_small")
    if len(df) - cut < min_rows:
        raise TrainingRefused(
            f"the holdout has {len(df) - cut} rows ({holdout:.0%} of {len(df)}); metrics on fewer "
            f"than {min_rows} rows are noise. Give more rows, a larger --holdout, or lower "
            "--min-holdout-rows ($TESSERA_MIN_HOLDOUT_ROWS) knowingly", "holdout_too_small"
        )
    p.update(
        seed=seed, bagging_seed=seed, feature_fraction_seed=seed, data_random_seed=seed,
        deterministic=True, force_row_wise=True, num_threads=p.get("num_threads", 1),
    )
    rounds = int(p.pop("num_iterations", 100))
    train_set = lgb.Dataset(x[:cut], y[:cut], feature_name=[_safe(r) for r in refs],
                            params={"verbosity": -1}, free_raw_data=False)
    callbacks = []
    if progress is not None:
        every = progress_every or max(1, rounds // 10)
        callbacks.append(progress_callback(x[cut:], y[cut:], rounds, every, progress))
    try:
        booster = lgb.train(p, train_set, num_boost_round=rounds, callbacks=callbacks)
    except lgb.basic.LightGBMError as e:
        raise TrainingRefused(f"LightGBM refused the parameters: {e}", "lightgbm") from e
    test_scores = booster.predict(x[cut:])
    y_hold = y[cut:]
    s = evaluation.summary(y_hold, test_scores)
    nan = [k for k in ("auc", "logloss", "calibration_error") if not math.isfinite(s[k])]
    if nan:
        classes = ", ".join(f"{v:g}" for v in np.unique(y_hold))
        raise TrainingRefused(
            f"holdout {' and '.join(nan)} {'is' if len(nan) == 1 else 'are'} NaN (holdout label "
            f"values: {classes}): the newest {len(y_hold)} rows need both classes; give more "
            "rows or a larger --holdout", "nan_metric"
        )
    metrics = {
        "auc": s["auc"],
        "logloss": s["logloss"],
        "calibration_error": s["calibration_error"],
        "positive_rate": s["positive_rate"],
        "train_rows": cut,
        "holdout_rows": len(df) - cut,
        "holdout_from": str(df[timestamp][cut]),
    }
    train_scores = booster.predict(x[:cut])
    reference = build_reference(
        {r: x[:cut, j] for j, r in enumerate(refs)}, score=train_scores
    ).to_dict()
    gain = booster.feature_importance("gain")
    p["num_iterations"] = rounds
    hold = _holdout_table(df[cut:], timestamp, y_hold, test_scores, refs, cols, label, segments)
    return TrainResult(
        booster.model_to_string(), refs, metrics, p, reference,
        extra={"importance": {r: float(g) for r, g in zip(refs, gain, strict=True)},
               "objective": objective, "segments": list(segments)},
        holdout=hold,
    )


def _holdout_table(df, timestamp: str, y: np.ndarray, score: np.ndarray, refs: list[str],
                   feature_cols: list[str], label: str, segments) -> pa.Table:
    """Holdout labels and scores, with every feature column of the training set (not only the
    model's: the champion is scored on these rows by the ``max_auc_drop`` gate)."""
    import polars as pl

    keep = np.arange(len(y))
    if len(keep) > MAX_STORED_HOLDOUT:
        keep = np.unique(np.linspace(0, len(y) - 1, MAX_STORED_HOLDOUT).astype(int))
    idx = pa.array(keep)
    cols = {"label": y[keep], "score": score[keep], "ts": df[timestamp].to_arrow().take(idx)}
    by_ref = dict(zip(refs, feature_cols, strict=True))
    for c in df.columns:
        r = column_ref(c)
        if r and c not in (label, timestamp) and r not in by_ref:
            by_ref[r] = c
    for r, c in by_ref.items():
        cols[f"f:{r}"] = df[c].cast(pl.Float64).to_numpy()[keep]
    for sname in segments:
        cols[f"s:{sname}"] = df[sname].cast(str).to_arrow().take(pa.array(keep))
    return pa.table(cols)


def _safe(ref: str) -> str:
    """LightGBM feature names cannot hold ':'; the registry keeps the real refs in order."""
    return ref.replace(":", "__")
