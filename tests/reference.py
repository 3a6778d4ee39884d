"""A deliberately naive reference for the window semantics (as Chronon's NaiveAggregator).

It reads the contract straight from the docs, with no tiles, no IR and no shared code beyond
the constants, so the real implementations are checked against an independent reading.
"""

from __future__ import annotations

import math


def brute_force(events, fn: str, t: int, window: int, hop: int):
    """Value of ``fn`` over ``events`` [(ts, seq, value)] with start(t) <= ts < t."""
    start = hop * math.floor((t - window) / hop)
    sel = [(ts, seq, v) for ts, seq, v in events if start <= ts < t]
    vals = [v for _, _, v in sel]
    if fn == "count":
        return len(sel)
    if fn == "sum":
        return math.fsum(vals)
    if not sel:
        return None
    if fn == "mean":
        return math.fsum(vals) / len(vals)
    if fn == "min":
        return min(vals)
    if fn == "max":
        return max(vals)
    if fn == "last":
        return max(sel, key=lambda e: (e[0], e[1]))[2]
    if fn == "first":  # the smallest event time; a tie goes to the earlier one in the log
        return min(sel, key=lambda e: (e[0], e[1]))[2]
    if fn in ("stddev", "variance"):  # population: divide by n
        m = math.fsum(vals) / len(vals)
        var = math.fsum((v - m) ** 2 for v in vals) / len(vals)
        return math.sqrt(var) if fn == "stddev" else var
    raise ValueError(fn)


def close(a, b, rel: float = 1e-9, abs_: float = 1e-9) -> bool:
    """Equality for features: exact for None/ints, relative 1e-9 for floats."""
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def same(a, b) -> bool:
    """Equal values of the same type (an int is not a float); NaN equals NaN. For comparing
    two implementations that must agree exactly."""
    if a is None or b is None:
        return a is b
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b and type(a) is type(b)
