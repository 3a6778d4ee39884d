"""Synthetic labelled scores where the truth is known: a latent risk drives the label, and each
model sees it through its own noise. Less noise means a truly better model."""

from __future__ import annotations

import numpy as np


def labelled_scores(
    n: int, noises: list[float], seed: int, base_rate: float = 0.3
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Labels and one probability-like score per noise level, all on the same requests."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(risk + np.log(base_rate / (1 - base_rate)))))).astype(
        np.int8
    )
    scores = [1 / (1 + np.exp(-(risk + rng.normal(scale=s, size=n)) + 1.0)) for s in noises]
    return y, scores
