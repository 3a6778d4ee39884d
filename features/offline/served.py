"""The "served" timeline of training sets: what the online store held at each row's time.

The event log records per event ``_applied_ts``, when the Redis write that made it readable
online returned (``streams.worker.landing``; 9999-12-31 for a late event the worker never
applied). In a served training set an event counts at a row's time ``t`` only if it is in the
row's window (as in the corrected timeline) *and* ``_applied_ts <= t``. Events without
``_applied_ts`` (imported, or logged before it was recorded) fall back to ``_ingest_ts``, with a
warning: that is when their batch reached the log, after its Redis write, so a bound, not the
time itself, and the late rule cannot be told from it.

Most rows are far from their events' application and keep the corrected timeline's index
ranges; only rows whose entity has an event before ``t`` applied after ``t`` are refolded from
the events of their range that pass (``served_ranges``).
"""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl

APPLIED = "__tessera_applied"
FALLBACK = "__tessera_no_applied"
# 9999-12-31T23:59:59.999999Z: the applied time of an event no read could ever see (late)
NEVER_US = 253_402_300_799_999_999
# "corrected-without-late": served's late rule only, every other event counted at its event
# time; ``timeline_diff`` tells late events from not-yet-applied ones with it
LATE_ONLY = "corrected-without-late"
TIMELINES = ("corrected", "served", LATE_ONLY)


class ServedTimelineWarning(UserWarning):
    """Events without ``_applied_ts``: their applied time is taken from ``_ingest_ts``."""


def applied_columns() -> list[pl.Expr]:
    """The log columns a served read adds: the applied time (µs) and whether it fell back."""
    return [pl.coalesce(pl.col("_applied_ts"), pl.col("_ingest_ts")).dt.epoch("us")
            .alias(APPLIED), pl.col("_applied_ts").is_null().alias(FALLBACK)]


def settle(ev: pl.DataFrame, source: str, until: int, event_time: str,
           late_only: bool = False) -> pl.DataFrame:
    """Drop events applied after the last row's time (late ones among them: no row of this
    set can count them) and warn about events whose applied time fell back. ``late_only``:
    events the worker applied count from their event time (column ``event_time``)."""
    if late_only:
        ev = ev.with_columns(pl.when(pl.col(APPLIED) >= NEVER_US).then(pl.col(APPLIED))
                             .otherwise(pl.col(event_time)).alias(APPLIED))
    fallback = int(ev[FALLBACK].sum()) if ev.height else 0
    if fallback:
        warnings.warn(
            f"{fallback} of {ev.height} events of source {source!r} have no _applied_ts (logged "
            "before it was recorded, or imported): their applied time is taken as _ingest_ts "
            "and the late rule is not applied to them", ServedTimelineWarning, stacklevel=3)
    return ev.filter(pl.col(APPLIED) <= until).drop(FALLBACK)


def served_ranges(code: np.ndarray, applied: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  q_t: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Index ranges of the events each query counts under the served timeline.

    ``code``/``applied``: the events in (entity, time) order; ``[lo, hi)``: each query's
    window (``window_bounds``). Returns ``(index, lo, hi)``: the ranges now index
    ``events[index]`` (``index`` is None when no query changes). Unchanged queries keep their
    range into the first ``len(events)`` entries; a changed query gets a range of copies of
    its window's events applied at or before its time, in their order.
    """
    n = len(applied)
    if n == 0 or len(lo) == 0:
        return None, lo, hi
    # per event: the latest applied time of its entity's events up to it (a superset test:
    # a query whose window has an event applied after it has one before hi)
    prefix_max = (pl.DataFrame({"c": code, "a": applied})
                  .select(pl.col("a").cum_max().over("c"))
                  .to_series().to_numpy())
    nonempty = hi > lo
    suspect = np.zeros(len(lo), dtype=bool)
    suspect[nonempty] = prefix_max[hi[nonempty] - 1] > q_t[nonempty]
    s = np.nonzero(suspect)[0]
    if len(s) == 0:
        return None, lo, hi
    lengths = hi[s] - lo[s]
    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    idx = np.repeat(lo[s] - starts, lengths) + np.arange(total, dtype=np.int64)
    keep = applied[idx] <= np.repeat(q_t[s], lengths)
    kept = np.add.reduceat(keep.astype(np.int64), starts)  # every range is non-empty
    lo2, hi2 = lo.copy(), hi.copy()
    lo2[s] = n + np.cumsum(kept) - kept
    hi2[s] = lo2[s] + kept
    return np.concatenate([np.arange(n, dtype=np.int64), idx[keep]]), lo2, hi2
