"""How a training set "as corrected" differs from one "as served", and why.

Two causes: *late* events (the worker never applied them: too old when they arrived) and
events *not yet applied* at a row's time (their event time had passed, their Redis write had
not landed yet). A third build, served's late rule alone (``served.LATE_ONLY``), separates
them: corrected vs late-only differ by late events, late-only vs served by the rest. A value
counts as different unless both are null or they agree to 1e-9 relative (sums fold in
another order in each build; see docs/semantics.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from features.offline.served import LATE_ONLY
from features.offline.training_set import _as_frame, build_training_set


@dataclass
class TimelineDiff:
    rows: int
    rows_differing: int
    values_differing: int
    rows_late: int  # rows where a late event changes a value
    rows_not_yet_applied: int  # rows where an event applied after the row's time does
    by_feature: dict[str, int] = field(default_factory=dict)  # column -> values differing

    def lines(self) -> list[str]:
        out = [f"rows: {self.rows}",
               f"rows differing: {self.rows_differing}",
               f"values differing: {self.values_differing}",
               f"  rows changed by late events (never applied online): {self.rows_late}",
               f"  rows changed by events not yet applied at the row's time: "
               f"{self.rows_not_yet_applied}"]
        out += [f"  {c}: {n} values" for c, n in self.by_feature.items() if n]
        return out


def _differ(a: pl.Series, b: pl.Series) -> np.ndarray:
    if not (a.dtype.is_numeric() or a.dtype == pl.Boolean):
        return (~a.eq_missing(b)).to_numpy()
    x = a.cast(pl.Float64).to_numpy()
    y = b.cast(pl.Float64).to_numpy()
    both_null = np.isnan(x) & np.isnan(y)
    with np.errstate(invalid="ignore"):
        same = both_null | (x == y) | np.isclose(x, y, rtol=1e-9, atol=0.0)
    return ~same


def diff_timelines(spine: object, features: list[str], **kwargs) -> TimelineDiff:
    """Build the spine's training set in both timelines and count what differs and why;
    ``kwargs`` as for ``build_training_set`` (repo, settings, event_log, timestamp_column)."""
    frame = _as_frame(spine)
    built = {tl: build_training_set(frame, features, timeline=tl, **kwargs).frame
             for tl in ("corrected", LATE_ONLY, "served")}
    corrected, late_only, served = built["corrected"], built[LATE_ONLY], built["served"]
    cols = [c for c in corrected.columns if c not in frame.columns]
    n = corrected.height
    any_diff = np.zeros(n, dtype=bool)
    late = np.zeros(n, dtype=bool)
    pending = np.zeros(n, dtype=bool)
    by_feature = {}
    values = 0
    for c in cols:
        d = _differ(corrected[c], served[c])
        by_feature[c] = int(d.sum())
        values += by_feature[c]
        any_diff |= d
        late |= _differ(corrected[c], late_only[c])
        pending |= _differ(late_only[c], served[c])
    return TimelineDiff(n, int(any_diff.sum()), values, int(late.sum()), int(pending.sum()),
                        by_feature)
