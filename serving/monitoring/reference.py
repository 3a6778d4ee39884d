"""Reference distributions: what a model's inputs and score looked like at training time.

Stored in the model's metadata (a plain dict, JSON-safe) and compared with live traffic by
``serving.monitoring.drift``. Per column we keep:

- ``quantiles``: the values at ``QUANTILES`` evenly spaced probabilities (0 and 1 included, so
  the first and last are the training min and max). They give an approximate reference CDF for
  the KS test and the in-range bounds for data-quality checks.
- ``edges`` / ``proportions``: PSI bins. Interior edges are the training deciles (duplicates
  dropped, so a point mass such as "0 transactions" gets one bin instead of several empty
  ones); ``proportions[i]`` is the exact training share of bin ``i`` (``x <= edges[0]``,
  ``edges[i-1] < x <= edges[i]``, ``x > edges[-1]``), counted, not read off the quantiles.
- ``null_rate`` and ``count``: share of missing values (None or NaN) and how many rows were seen.

The format is small (about 2 KB per column) and versioned by ``FORMAT``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from serving.monitoring.errors import MonitorError

FORMAT = 1
QUANTILES = 201  # every half percentile
PSI_BINS = 10
SCORE = "score"


@dataclass(frozen=True)
class ColumnReference:
    """The training-time distribution of one numeric column (a feature or the score)."""

    quantiles: tuple[float, ...]
    edges: tuple[float, ...]
    proportions: tuple[float, ...]
    null_rate: float
    count: int

    def __post_init__(self) -> None:
        if len(self.proportions) != len(self.edges) + 1:
            raise MonitorError(
                f"reference has {len(self.edges)} edges but {len(self.proportions)} "
                "proportions; expected one more proportion than edges -- rebuild it with "
                "build_column_reference()"
            )
        if self.quantiles and any(np.diff(self.quantiles) < 0):
            raise MonitorError("reference quantiles must be non-decreasing; rebuild the reference")

    @property
    def empty(self) -> bool:
        """True when training saw no non-null value (nothing to compare against)."""
        return not self.quantiles

    @property
    def low(self) -> float:
        return self.quantiles[0]

    @property
    def high(self) -> float:
        return self.quantiles[-1]

    def to_dict(self) -> dict:
        return {
            "quantiles": list(self.quantiles),
            "edges": list(self.edges),
            "proportions": list(self.proportions),
            "null_rate": self.null_rate,
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ColumnReference:
        try:
            return cls(
                quantiles=tuple(float(v) for v in d["quantiles"]),
                edges=tuple(float(v) for v in d["edges"]),
                proportions=tuple(float(v) for v in d["proportions"]),
                null_rate=float(d["null_rate"]),
                count=int(d["count"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise MonitorError(
                f"reference column is malformed ({e!r}); expected keys quantiles, edges, "
                "proportions, null_rate, count as written by ColumnReference.to_dict()"
            ) from e


@dataclass(frozen=True)
class ModelReference:
    """Reference distributions of every input feature (by name) and of the score."""

    features: dict[str, ColumnReference] = field(default_factory=dict)
    score: ColumnReference | None = None

    def columns(self) -> dict[str, ColumnReference]:
        """Every monitored column, features first, the score last under the name ``score``."""
        out = dict(self.features)
        if self.score is not None:
            out[SCORE] = self.score
        return out

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "features": {k: v.to_dict() for k, v in self.features.items()},
            "score": None if self.score is None else self.score.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> ModelReference:
        if d.get("format", FORMAT) != FORMAT:
            raise MonitorError(
                f"reference format {d.get('format')!r} is not supported (expected {FORMAT}); "
                "retrain or rebuild the reference with this version of Tessera"
            )
        score = d.get("score")
        return cls(
            features={k: ColumnReference.from_dict(v) for k, v in d.get("features", {}).items()},
            score=None if score is None else ColumnReference.from_dict(score),
        )


def _as_float(values: np.ndarray | list) -> np.ndarray:
    """Float array with None turned into NaN (so both count as missing)."""
    arr = np.asarray(values, dtype=object if isinstance(values, list) else None)
    if arr.dtype == object:
        arr = np.array([np.nan if v is None else v for v in arr], dtype=float)
    return arr.astype(float, copy=False)


def bin_index(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """PSI bin of each value: 0 for ``x <= edges[0]``, ``len(edges)`` for ``x > edges[-1]``."""
    return np.searchsorted(edges, x, side="left")


def build_column_reference(
    values: np.ndarray | list, quantiles: int = QUANTILES, bins: int = PSI_BINS
) -> ColumnReference:
    """Summarise one training column (call it at training time, once per feature and score)."""
    arr = _as_float(values)
    n = int(arr.size)
    ok = arr[~np.isnan(arr)]
    null_rate = 0.0 if n == 0 else float(1 - ok.size / n)
    if ok.size == 0:
        return ColumnReference((), (), (1.0,), null_rate, n)
    qs = np.quantile(ok, np.linspace(0, 1, quantiles))
    inner = np.unique(np.quantile(ok, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(bin_index(inner, ok), minlength=inner.size + 1)
    return ColumnReference(
        quantiles=tuple(float(v) for v in qs),
        edges=tuple(float(v) for v in inner),
        proportions=tuple(float(c) for c in counts / ok.size),
        null_rate=null_rate,
        count=n,
    )


def build_reference(
    features: Mapping[str, np.ndarray | list], score: np.ndarray | list | None = None
) -> ModelReference:
    """References of every training feature column (by name) and of the model's scores."""
    return ModelReference(
        features={k: build_column_reference(v) for k, v in features.items()},
        score=None if score is None else build_column_reference(score),
    )
