"""Drift and data quality of one window of live values against a stored reference. Pure numpy/scipy.

Every check asks two questions and alerts only when both say yes:

- is the change big enough to matter? (PSI >= ``psi``; null rate up by more than
  ``null_margin``; more than ``out_of_range`` of values outside the training range)
- is it more than noise in this window? (a test at ``alpha``, Bonferroni-split over the columns
  of the report, so ``alpha`` bounds the chance that an undrifted window raises any alert)

PSI compares the live share of each reference bin with the training share (both floored at
``EPS`` so an empty bin costs a finite amount). Its noise is about ``(bins - 1) / n``, so
``min_rows`` keeps tiny windows from being judged at all.

The KS test is two-sample in spirit but the training sample is not kept: the reference CDF is
rebuilt from the stored quantiles by linear interpolation between them (exact at each stored
quantile, right-continuous at ties, so point masses keep their jumps). With 201 quantiles the
interpolated CDF is off by at most the mass between two neighbouring quantiles (0.5 %) and in
practice far less for smooth distributions; the statistic is taken at every live value and
every stored quantile, from both sides. Its p-value is the two-sample asymptotic one, the
Kolmogorov distribution at ``n_eff = n * m / (n + m)`` (``m`` = non-null training rows), as
``scipy.stats.ks_2samp(method="asymp")`` does. With ties (counts, flags) the test is
conservative: fewer alarms, never more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats as sps

from serving.monitoring.reference import ColumnReference, ModelReference, bin_index

EPS = 1e-4


@dataclass(frozen=True)
class Thresholds:
    """When a window alerts; the defaults are the usual PSI reading (0.1 watch, 0.2 act)."""

    psi: float = 0.2
    alpha: float = 0.01
    null_margin: float = 0.05
    out_of_range: float = 0.01
    min_rows: int = 200


# -- statistics -------------------------------------------------------------------------------


def live_proportions(ref: ColumnReference, live: np.ndarray) -> np.ndarray:
    """Share of the (non-null) live values falling into each reference PSI bin."""
    counts = np.bincount(bin_index(np.asarray(ref.edges), live), minlength=len(ref.proportions))
    return counts / max(live.size, 1)


def psi(ref: ColumnReference, live: np.ndarray) -> float:
    """Population stability index of the live values against the reference bins."""
    if live.size == 0 or ref.empty:
        return math.nan
    a = np.maximum(live_proportions(ref, live), EPS)
    e = np.maximum(np.asarray(ref.proportions), EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def reference_cdf(ref: ColumnReference, x: np.ndarray, side: str = "right") -> np.ndarray:
    """Approximate training CDF at ``x`` from the stored quantiles (``side="left"``: P(X < x))."""
    q = np.asarray(ref.quantiles)
    p = np.linspace(0.0, 1.0, q.size)
    i = np.searchsorted(q, x, side=side)  # knots <= x (right) or < x (left)
    out = np.where(i >= q.size, 1.0, 0.0)
    inside = (i > 0) & (i < q.size)
    j = i[inside]
    lo, hi = q[j - 1], q[j]
    frac = (x[inside] - lo) / np.where(hi > lo, hi - lo, 1.0)
    out[inside] = p[j - 1] + (p[j] - p[j - 1]) * np.clip(frac, 0.0, 1.0)
    return out


def ks_statistic(ref: ColumnReference, live: np.ndarray) -> float:
    """Largest gap between the live empirical CDF and the approximate reference CDF."""
    if live.size == 0 or ref.empty:
        return math.nan
    s = np.sort(live)
    at = np.unique(np.concatenate([s, np.asarray(ref.quantiles)]))
    gaps = []
    for side in ("right", "left"):
        f_live = np.searchsorted(s, at, side=side) / s.size
        gaps.append(np.abs(f_live - reference_cdf(ref, at, side=side)))
    return float(max(g.max() for g in gaps))


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Asymptotic two-sample KS p-value for statistic ``d`` with sample sizes ``n`` and ``m``."""
    if math.isnan(d) or n == 0 or m == 0:
        return math.nan
    en = n * m / (n + m)
    return float(sps.kstwo.sf(d, max(1, round(en))))


def _binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): chance of seeing at least this many by luck."""
    if n == 0 or k <= 0:
        return 1.0
    return float(sps.binom.sf(k - 1, n, min(max(p, 0.0), 1.0)))


# -- one column -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnDrift:
    """Everything measured on one column; ``alerts`` names what crossed both bars."""

    name: str
    rows: int
    null_rate: float
    ref_null_rate: float
    out_of_range_rate: float
    psi: float
    ks: float
    ks_p: float
    edges: list[float]
    live_hist: list[float]
    ref_hist: list[float]
    alerts: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return "drift" in self.alerts

    def to_dict(self) -> dict:
        return finite(asdict(self))


def finite(obj):
    """NaN and inf are not JSON: report them as None, at any depth."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def column_drift(
    name: str,
    ref: ColumnReference,
    values: np.ndarray,
    thresholds: Thresholds = Thresholds(),
    tests: int = 1,
) -> ColumnDrift:
    """Compare one window of ``values`` (NaN = missing) with ``ref``; ``tests`` sets Bonferroni."""
    arr = np.asarray(values, dtype=float)
    n = int(arr.size)
    live = arr[~np.isnan(arr)]
    m = int(round(ref.count * (1 - ref.null_rate)))
    level = thresholds.alpha / max(tests, 1)
    null_rate = 1 - live.size / n if n else math.nan
    if ref.empty or live.size == 0:
        oor = math.nan
        p_val = d = psi_v = math.nan
        hist = [0.0] * len(ref.proportions)
    else:
        outside = int(np.count_nonzero((live < ref.low) | (live > ref.high)))
        oor = outside / live.size
        psi_v = psi(ref, live)
        d = ks_statistic(ref, live)
        p_val = ks_pvalue(d, int(live.size), m)
        hist = [float(v) for v in live_proportions(ref, live)]
    alerts: list[str] = []
    if n >= thresholds.min_rows:
        if psi_v >= thresholds.psi and p_val < level:
            alerts.append("drift")
        nulls = n - int(live.size)
        if null_rate - ref.null_rate > thresholds.null_margin and (
            _binom_sf(nulls, n, ref.null_rate) < level
        ):
            alerts.append("null_rate")
        if live.size and oor > thresholds.out_of_range:
            # chance that a fresh draw falls outside the min..max of m training values: 2/(m+1)
            expected = 2 / (m + 1) if m else 1.0
            if _binom_sf(round(oor * live.size), int(live.size), expected) < level:
                alerts.append("out_of_range")
    return ColumnDrift(
        name=name,
        rows=n,
        null_rate=null_rate,
        ref_null_rate=ref.null_rate,
        out_of_range_rate=oor,
        psi=psi_v,
        ks=d,
        ks_p=p_val,
        edges=list(ref.edges),
        live_hist=hist,
        ref_hist=list(ref.proportions),
        alerts=alerts,
    )


def drift_report(
    columns: Mapping[str, np.ndarray],
    reference: ModelReference,
    thresholds: Thresholds = Thresholds(),
) -> list[ColumnDrift]:
    """Every reference column present in ``columns`` compared at a shared family-wise alpha."""
    refs = reference.columns()
    names = [k for k in refs if k in columns]
    return [column_drift(k, refs[k], columns[k], thresholds, tests=len(names)) for k in names]
