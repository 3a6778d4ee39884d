"""Sequential-test benchmark: what peeking costs, and what the confidence sequence costs instead.

    .venv/bin/python bench/sequential.py [--quick] [--experiments 1000]

Simulated experiments, each looked at after every 100 labels up to 10,000:

1. **A/A, paired** (the shadow case): champion and challenger see the same latent risk through
   independent noise of the same size, so neither is better; per labelled request the
   difference of their loglosses. ``fpr_fixed_peeking`` = share of experiments where a fixed-
   horizon t-test reached p < 0.05 at *some* look (what reading a fixed-horizon report after
   every batch and stopping at the first "better" does); ``fpr_sequential`` = share where the
   confidence sequence (``serving.experiments.sequential``) excluded zero at some look.
2. **A/A, unpaired** (the A/B case): a conversion outcome with the same rate in both arms,
   users split 50/50; same two rates.
3. **True effect, paired**: the challenger has less noise. ``fixed_horizon_n`` = labels a
   fixed-horizon test needs for 80% power at alpha 0.05 (from the effect's mean and standard
   deviation measured on 2M requests); ``median_labels_to_decision`` = median labels at which the
   sequential test said "better" (looks every 100, up to 4x ``fixed_horizon_n``), with the share
   decided, wrong decisions, and the fixed-horizon test's empirical power at ``fixed_horizon_n``.

Vectorised numpy over experiments x labels; writes ``bench/results/sequential.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as sps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.experiments import sequential as sq  # noqa: E402

ALPHA = 0.05
LOOK = 100
HORIZON = 10_000
CHUNK = 100  # experiments simulated at once (memory: CHUNK x labels floats per array)


def _scores(rng: np.random.Generator, shape, noise_a: float, noise_b: float):
    risk = rng.normal(size=shape)
    y = rng.random(shape) < 1 / (1 + np.exp(-(risk - 1.0)))
    a = 1 / (1 + np.exp(-(risk + rng.normal(scale=noise_a, size=shape) - 1.0)))
    b = 1 / (1 + np.exp(-(risk + rng.normal(scale=noise_b, size=shape) - 1.0)))
    return y, a, b


def paired_diffs(rng, shape, noise_a: float, noise_b: float) -> np.ndarray:
    """Per-request champion logloss minus challenger logloss (positive: challenger better)."""
    y, a, b = _scores(rng, shape, noise_a, noise_b)
    return sq.per_request_logloss(y, a) - sq.per_request_logloss(y, b)


def _fixed_z(mean: np.ndarray, var: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return mean / np.sqrt(var / n)


def aa_paired(experiments: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    looks = np.arange(LOOK, HORIZON + 1, LOOK) - 1
    zc = sps.norm.ppf(1 - ALPHA / 2)
    fixed = seq = final = 0
    for start in range(0, experiments, CHUNK):
        k = min(CHUNK, experiments - start)
        d = paired_diffs(rng, (k, HORIZON), 1.0, 1.0)
        n, mean, var = sq._running_var(d)
        half = np.sqrt(var) * sq.margin(n, ALPHA, 5000)
        m, h = mean[:, looks], half[:, looks]
        z = np.abs(_fixed_z(m, var[:, looks], n[looks]))
        fixed += int((z > zc).any(axis=1).sum())
        final += int((z[:, -1] > zc).sum())
        seq += int(((m - h > 0) | (m + h < 0)).any(axis=1).sum())
    return {
        "experiments": experiments,
        "fpr_fixed_peeking": fixed / experiments,
        "fpr_fixed_single_look": final / experiments,
        "fpr_sequential": seq / experiments,
    }


def aa_unpaired(experiments: int, seed: int, rate: float = 0.1) -> dict:
    rng = np.random.default_rng(seed)
    looks = np.arange(LOOK, HORIZON + 1, LOOK) - 1
    zc = sps.norm.ppf(1 - ALPHA / 2)
    fixed = seq = final = 0
    for start in range(0, experiments, CHUNK):
        k = min(CHUNK, experiments - start)
        x = (rng.random((k, HORIZON)) < rate).astype(float)
        in_b = rng.random((k, HORIZON)) < 0.5
        na, nb, diff, half, n = sq.unpaired_halfwidths(x, in_b, ALPHA, 5000)
        d, h = diff[:, looks], half[:, looks]
        ok = (na[:, looks] >= LOOK / 4) & (nb[:, looks] >= LOOK / 4)
        # fixed horizon: the pooled two-proportion z-test at each look
        xa = np.cumsum(np.where(in_b, 0.0, x), axis=1)[:, looks]
        xb = np.cumsum(np.where(in_b, x, 0.0), axis=1)[:, looks]
        a_n, b_n = na[:, looks], nb[:, looks]
        pooled = (xa + xb) / (a_n + b_n)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.abs(d / np.sqrt(pooled * (1 - pooled) * (1 / a_n + 1 / b_n)))
        z = np.where(np.isfinite(z), z, 0.0)
        fixed += int(((z > zc) & ok).any(axis=1).sum())
        final += int((z[:, -1] > zc).sum())
        seq += int((((d - h > 0) | (d + h < 0)) & ok).any(axis=1).sum())
    return {
        "experiments": experiments,
        "conversion_rate": rate,
        "fpr_fixed_peeking": fixed / experiments,
        "fpr_fixed_single_look": final / experiments,
        "fpr_sequential": seq / experiments,
    }


def true_effect(experiments: int, seed: int, noise_a: float = 1.0, noise_b: float = 0.85) -> dict:
    rng = np.random.default_rng(seed)
    big = paired_diffs(rng, (2_000_000,), noise_a, noise_b)
    delta, sd = float(big.mean()), float(big.std())
    zsum = sps.norm.ppf(1 - ALPHA / 2) + sps.norm.ppf(0.8)
    n_fixed = int(np.ceil((zsum * sd / delta) ** 2))
    horizon = int(np.ceil(4 * n_fixed / LOOK) * LOOK)
    looks = np.arange(LOOK, horizon + 1, LOOK) - 1
    decided_at = np.full(experiments, np.inf)
    wrong = fixed_power = 0
    for start in range(0, experiments, CHUNK):
        k = min(CHUNK, experiments - start)
        d = paired_diffs(rng, (k, horizon), noise_a, noise_b)
        n, mean, var = sq._running_var(d)
        half = np.sqrt(var) * sq.margin(n, ALPHA, 5000)
        m, h = mean[:, looks], half[:, looks]
        hit = (m - h > 0) | (m + h < 0)
        any_hit = hit.any(axis=1)
        first = np.argmax(hit, axis=1)
        rows = np.arange(k)
        wrong += int((any_hit & (m[rows, first] + h[rows, first] < 0)).sum())
        decided_at[start : start + k] = np.where(any_hit, (first + 1) * LOOK, np.inf)
        j = n_fixed - 1
        z = _fixed_z(mean[:, j], var[:, j], n[j])
        fixed_power += int((z > sps.norm.ppf(1 - ALPHA / 2)).sum())
    finite = decided_at[np.isfinite(decided_at)]
    return {
        "experiments": experiments,
        "noise_champion": noise_a,
        "noise_challenger": noise_b,
        "effect_mean_logloss_diff": delta,
        "effect_sd": sd,
        "fixed_horizon_n": n_fixed,
        "fixed_horizon_empirical_power": fixed_power / experiments,
        "max_labels": horizon,
        "median_labels_to_decision": float(np.median(decided_at)),
        "p90_labels_to_decision": float(np.percentile(decided_at, 90)),
        "share_decided": finite.size / experiments,
        "share_decided_by_fixed_n": float((decided_at <= n_fixed).mean()),
        "wrong_decisions": wrong,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="200 experiments per scenario")
    ap.add_argument("--experiments", type=int, default=1000)
    args = ap.parse_args()
    e = 200 if args.quick else args.experiments
    t0 = time.perf_counter()
    paired = aa_paired(e, 1)
    unpaired = aa_unpaired(e, 2)
    effect = true_effect(e, 3)
    took = time.perf_counter() - t0
    out = {
        "alpha": ALPHA,
        "look_every": LOOK,
        "horizon": HORIZON,
        "t_star": 5000,
        "fpr_fixed_peeking": paired["fpr_fixed_peeking"],
        "fpr_sequential": paired["fpr_sequential"],
        "median_labels_to_decision": effect["median_labels_to_decision"],
        "fixed_horizon_n": effect["fixed_horizon_n"],
        "aa_paired_logloss": paired,
        "aa_unpaired_conversion": unpaired,
        "true_effect_paired_logloss": effect,
        "seconds": took,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    path = ROOT / "bench" / "results" / "sequential.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"{e} experiments per scenario, looks every {LOOK} labels up to {HORIZON:,}")
    print(f"{'A/A scenario':<28}{'fixed, peeking':>16}{'fixed, 1 look':>15}{'sequential':>12}")
    for name, r in (("paired logloss (shadow)", paired), ("unpaired conversion (A/B)", unpaired)):
        print(
            f"{name:<28}{r['fpr_fixed_peeking']:>16.1%}{r['fpr_fixed_single_look']:>15.1%}"
            f"{r['fpr_sequential']:>12.1%}"
        )
    print(
        f"true effect: fixed-horizon n for 80% power {effect['fixed_horizon_n']:,} (empirical "
        f"power {effect['fixed_horizon_empirical_power']:.0%}); sequential median "
        f"{effect['median_labels_to_decision']:,.0f} labels to a decision "
        f"(ratio {effect['median_labels_to_decision'] / effect['fixed_horizon_n']:.2f}), "
        f"p90 {effect['p90_labels_to_decision']:,.0f}, decided {effect['share_decided']:.0%} "
        f"within {effect['max_labels']:,}, "
        f"{effect['share_decided_by_fixed_n']:.0%} by the fixed n, "
        f"{effect['wrong_decisions']} wrong"
    )
    print(f"{took:.1f} s -> {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
