"""The one percentile the stream benchmarks quote (nearest rank, no interpolation)."""

from __future__ import annotations


def pct(xs: list[float], q: float) -> float:
    """The ``q`` quantile of ``xs`` (nan when empty)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")
