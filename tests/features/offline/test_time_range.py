"""The one event-time range rule (``in_time_range``): ``start <= ts < end``, µs UTC, either
bound open; ``EventLog.scan`` and the Spark engine's per-partition log both cut with it."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from features.offline.event_log import in_time_range

US = 1_000_000


def _frame() -> pl.LazyFrame:
    ts = [datetime.fromtimestamp(s, UTC) for s in (10, 20, 30)]
    return pl.DataFrame({"ts": ts, "x": [1, 2, 3]}).lazy()


def test_start_is_inclusive_end_exclusive_and_none_is_open():
    def xs(start, end):
        return in_time_range(_frame(), "ts", start, end).collect()["x"].to_list()

    assert xs(20 * US, 30 * US) == [2]
    assert xs(20 * US, 30 * US + 1) == [2, 3]
    assert xs(None, 20 * US) == [1]
    assert xs(20 * US + 1, None) == [3]
    assert xs(None, None) == [1, 2, 3]
