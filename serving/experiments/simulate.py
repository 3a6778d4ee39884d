"""Synthetic experiment logs where the truth is known, for the demo and the benchmark.

Each request has a latent risk; its label is drawn from that risk, and each model sees the risk
through its own noise (less noise = a truly better model). The champion serves the entities the
spec assigns to it, arms serve theirs, every shadow scores every champion request.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from serving.experiments.assign import assign
from serving.experiments.spec import CHAMPION, DeploymentSpec


def simulate_log(
    spec: DeploymentSpec,
    requests: int,
    noise: dict[str, float],
    labelled: float = 0.2,
    entities: int = 50_000,
    seed: int = 0,
    start_us: int = 1_700_000_000_000_000,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(predictions, outcomes) frames with the sink's column names; ``noise`` per version."""
    rng = np.random.default_rng(seed)
    keys = np.array([f"user_id=u{i}" for i in range(entities)])
    arm_of = {k: assign(spec, k) for k in keys}
    ent = rng.integers(0, entities, requests)
    ek = keys[ent]
    ts = start_us + np.sort(rng.integers(0, 86_400_000_000, requests))
    rid = np.char.add("r", np.arange(requests).astype(str))
    risk = rng.normal(size=requests)
    y = rng.random(requests) < 1 / (1 + np.exp(-(risk - 1.0)))
    arms = [arm_of[k] for k in ek]
    arm = np.array([a for a, _ in arms])
    version = np.array([v for _, v in arms])

    def score(v: str, n: int, base: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(base + rng.normal(scale=noise[v], size=n)) + 1.0))

    served = np.empty(requests)
    for v in np.unique(version):
        m = version == v
        served[m] = score(v, int(m.sum()), risk[m])
    frames = [
        pl.DataFrame(
            {
                "request_id": rid,
                "ts": ts,
                "entity_key": ek,
                "version": version,
                "role": np.where(arm == CHAMPION, "champion", "arm"),
                "arm": arm,
                "score": served,
                "latency_ms": rng.gamma(4.0, 0.03, requests),
            }
        )
    ]
    champ = arm == CHAMPION
    for v in spec.shadows:
        n = int(champ.sum())
        frames.append(
            pl.DataFrame(
                {
                    "request_id": rid[champ],
                    "ts": ts[champ],
                    "entity_key": ek[champ],
                    "version": np.full(n, v),
                    "role": "shadow",
                    "arm": "shadow",
                    "score": score(v, n, risk[champ]),
                    "latency_ms": rng.gamma(4.0, 0.01, n),
                }
            )
        )
    preds = pl.concat(frames).with_columns(
        pl.lit(spec.name).alias("model"),
        pl.lit(None, dtype=pl.String).alias("error"),
        pl.lit("").alias("features_hash"),
    )
    pick = rng.random(requests) < labelled
    outcomes = pl.DataFrame(
        {
            "label": y[pick].astype(float),
            "ts": ts[pick] + rng.integers(1, 3_600_000_000, int(pick.sum())),
            "request_id": rid[pick],
            "entity_key": ek[pick],
            "model": spec.name,
        }
    )
    return preds, outcomes
