"""The monitor report: one window of logged predictions against the model's reference.

Input is a polars frame with one column per feature (named as in the reference) and ``score``;
the prediction log stores the vector as a list column, which ``expand_features`` turns into
named columns. ``latest_window`` picks the sliding window (last N rows and/or last T seconds).
This is what ``tessera monitor report NAME`` prints and ``GET /v1/monitor/{name}`` serves.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from serving.monitoring.drift import ColumnDrift, Thresholds, drift_report
from serving.monitoring.errors import MonitorError
from serving.monitoring.reference import SCORE, ModelReference

LOGGED = "_vector_logged"  # expand_features: False where only a hash of the vector was logged


@dataclass(frozen=True)
class MonitorReport:
    model: str
    version: str | None
    rows: int
    window_start_us: int | None
    window_end_us: int | None
    columns: list[ColumnDrift]
    thresholds: Thresholds
    created_us: int = field(default_factory=lambda: time.time_ns() // 1000)

    @property
    def alerts(self) -> list[tuple[str, str]]:
        """``(column, kind)`` for every check that crossed both its bars."""
        return [(c.name, kind) for c in self.columns for kind in c.alerts]

    @property
    def drifted(self) -> list[str]:
        return [c.name for c in self.columns if c.drifted]

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "version": self.version,
            "rows": self.rows,
            "window_start_us": self.window_start_us,
            "window_end_us": self.window_end_us,
            "created_us": self.created_us,
            "thresholds": asdict(self.thresholds),
            "status": "alert" if self.alerts else "ok",
            "alerts": [{"column": c, "kind": k} for c, k in self.alerts],
            "columns": [c.to_dict() for c in self.columns],
        }


def expand_features(
    predictions: pl.DataFrame, feature_names: Sequence[str], column: str = "features"
) -> pl.DataFrame:
    """Turn the logged feature vector (a list column) into one named column per feature."""
    if column not in predictions.columns:
        raise MonitorError(
            f"predictions have no {column!r} column; log feature vectors (features='vector') "
            "to monitor input drift, or monitor the score alone"
        )
    width = len(feature_names)
    vec = predictions[column]
    # rows logged with only a hash have a null vector: their features were not logged (not
    # missing), so they are marked and left out of the feature checks (the score still counts)
    filled = vec.fill_null([None] * width) if vec.null_count() else vec
    lengths = filled.list.len().unique().to_list()
    if lengths and lengths != [width]:
        raise MonitorError(
            f"logged vectors have lengths {lengths} but the model has {width} features; "
            "pick the rows of one model version before expanding"
        )
    wide = filled.list.to_struct(fields=list(feature_names)).struct.unnest()
    logged = vec.is_not_null().alias(LOGGED)
    return pl.concat([predictions.drop(column), wide, logged.to_frame()], how="horizontal")


def latest_window(
    predictions: pl.DataFrame,
    rows: int | None = None,
    seconds: float | None = None,
    ts: str = "ts",
) -> pl.DataFrame:
    """The sliding window: the newest ``rows`` predictions within the last ``seconds``."""
    df = predictions.sort(ts) if ts in predictions.columns else predictions
    if seconds is not None and ts in df.columns and df.height:
        newest = df[ts].max()
        df = df.filter(pl.col(ts) > newest - int(seconds * 1_000_000))
    if rows is not None:
        df = df.tail(rows)
    return df


def _values(window: pl.DataFrame, name: str) -> np.ndarray:
    if name != SCORE and LOGGED in window.columns:
        window = window.filter(pl.col(LOGGED))
    if name not in window.columns:  # a feature the log lacks counts as missing on every row
        return np.full(window.height, np.nan)
    return window[name].cast(pl.Float64).fill_null(np.nan).to_numpy()


def monitor_report(
    model: str,
    window: pl.DataFrame,
    reference: ModelReference,
    thresholds: Thresholds = Thresholds(),
    version: str | None = None,
) -> MonitorReport:
    """Drift and data quality of every feature and of the score over ``window``."""
    names = list(reference.features) + ([SCORE] if reference.score is not None else [])
    columns = {k: _values(window, k) for k in names}
    has_ts = "ts" in window.columns and window.height > 0
    return MonitorReport(
        model=model,
        version=version,
        rows=window.height,
        window_start_us=int(window["ts"].min()) if has_ts else None,
        window_end_us=int(window["ts"].max()) if has_ts else None,
        columns=drift_report(columns, reference, thresholds),
        thresholds=thresholds,
    )


def format_report(r: dict) -> str:
    """A terminal-sized table of ``MonitorReport.to_dict()``."""

    def f(x, spec=".3f"):
        return "-" if x is None else format(x, spec)

    lines = [
        f"monitor {r['model']} v{r['version'] or '?'}: {r['rows']} predictions, "
        f"status {r['status'].upper()}",
        f"{'column':<24}{'PSI':>8}{'KS':>8}{'KS p':>10}{'nulls':>8}{'ref nulls':>10}"
        f"{'out of range':>14}  alerts",
    ]
    for c in r["columns"]:
        lines.append(
            f"{c['name']:<24}{f(c['psi']):>8}{f(c['ks']):>8}{f(c['ks_p'], '.2g'):>10}"
            f"{f(c['null_rate']):>8}{f(c['ref_null_rate']):>10}{f(c['out_of_range_rate']):>14}"
            f"  {', '.join(c['alerts']) or '-'}"
        )
    return "\n".join(lines)
