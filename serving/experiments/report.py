"""The experiment report: per arm and per shadow against the champion, with a verdict.

Shadows scored the champion's own requests, so they are compared *paired* (DeLong on the same
labels, McNemar on decision accuracy, paired bootstrap). A/B arms served other entities, so they
are compared *unpaired* (independent DeLong variances, two-proportion z-test on the business
metric). The business metric is the share of correct decisions at the spec's threshold
(``accuracy``) or the share of positive outcomes (``positive_rate``, for when the model's
decision changes the outcome).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl

from serving.experiments import stats
from serving.experiments.join import join_outcomes
from serving.experiments.records import OUTCOME_SCHEMA, PREDICTION_SCHEMA
from serving.experiments.sink import read_dataset
from serving.experiments.spec import DeploymentSpec, DeploymentStore


def dataset_dirs(offline_dir: Path | str) -> tuple[Path, Path]:
    """Where the sink writes predictions and outcomes."""
    root = Path(offline_dir) / "experiments"
    return root / "predictions", root / "outcomes"


def _finite(x: float) -> float | None:
    return x if isinstance(x, float | int) and math.isfinite(x) else None


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        return _finite(obj)
    if isinstance(obj, np.floating | np.integer):
        return _clean(obj.item())
    return obj


def _metrics(g: pl.DataFrame, threshold: float, reps: int, alpha: float, seed: int) -> dict:
    scores = g["score"].to_numpy()
    lab = g.filter(pl.col("label").is_not_null() & pl.col("score").is_not_null())
    y = lab["label"].to_numpy() >= 0.5
    p = lab["score"].to_numpy()
    errors = g["error"].is_not_null().sum()
    out = {
        "predictions": g.height,
        "labelled": lab.height,
        "errors": int(errors),
        "error_rate": errors / g.height if g.height else math.nan,
        "mean_score": float(np.nanmean(scores)) if g.height else math.nan,
        **stats.latency_percentiles(g["latency_ms"].to_numpy()),
        "auc": stats.auc(y, p),
        "logloss": stats.logloss(y, p),
        "brier": stats.brier(y, p),
        "positive_rate": float(y.mean()) if y.size else math.nan,
        "accuracy": float(np.mean((p >= threshold) == y)) if y.size else math.nan,
        "reliability": stats.reliability_bins(y, p),
    }
    if reps and y.size:
        cis = stats.bootstrap_cis(y, p, None, reps, alpha, seed)
        out["ci"] = {k: list(v) for k, v in cis.items()}
    return out


def _paired(champ: pl.DataFrame, other: pl.DataFrame, spec: DeploymentSpec, reps, alpha, seed):
    pairs = (
        champ.select("request_id", pl.col("score").alias("s_a"), "label")
        .join(
            other.select("request_id", pl.col("score").alias("s_b")), on="request_id", how="inner"
        )
        .drop_nulls(["s_a", "s_b"])
    )
    a_all, b_all = pairs["s_a"].to_numpy(), pairs["s_b"].to_numpy()
    lab = pairs.drop_nulls("label")
    y = lab["label"].to_numpy() >= 0.5
    a, b = lab["s_a"].to_numpy(), lab["s_b"].to_numpy()
    test = stats.delong_paired(y, a, b)
    t = spec.threshold
    business = stats.mcnemar((a >= t) == y, (b >= t) == y)
    out = {
        "paired_requests": pairs.height,
        "paired_labelled": lab.height,
        "score_correlation": stats.correlation(a_all, b_all),
        "agreement_at_threshold": stats.agreement(a_all, b_all, t),
        "auc_test": asdict(test),
        "business_metric": "accuracy",
        "business_test": asdict(business),
        "verdict": asdict(stats.verdict(test, lab.height, alpha=alpha)),
    }
    if reps and y.size:
        cis = stats.bootstrap_cis(y, b, a, reps, alpha, seed)
        out["ci_diff"] = {k: list(v) for k, v in cis.items() if k.endswith("_diff")}
    return out


def _unpaired(champ: pl.DataFrame, arm: pl.DataFrame, spec: DeploymentSpec, alpha, business):
    def parts(g):
        lab = g.drop_nulls(["label", "score"])
        y = lab["label"].to_numpy() >= 0.5
        s = lab["score"].to_numpy()
        hits = int(np.sum((s >= spec.threshold) == y)) if business == "accuracy" else int(y.sum())
        return y, s, hits

    ya, sa, xa = parts(champ)
    yb, sb, xb = parts(arm)
    test = stats.delong_unpaired(ya, sa, yb, sb)
    return {
        "auc_test": asdict(test),
        "business_metric": business,
        "business_test": asdict(stats.two_proportion_z(xa, ya.size, xb, yb.size)),
        "verdict": asdict(stats.verdict(test, ya.size + yb.size, alpha=alpha, who="arm")),
    }


def build_report(
    preds: pl.DataFrame,
    outcomes: pl.DataFrame,
    spec: DeploymentSpec,
    max_delay_s: float = 7 * 86_400,
    alpha: float = 0.05,
    reps: int = 200,
    business: str = "accuracy",
    seed: int = 0,
) -> dict:
    """The report as plain JSON-able data (NaN becomes None)."""
    preds = preds.filter(pl.col("model") == spec.name)
    outcomes = outcomes.filter(pl.col("model").is_null() | (pl.col("model") == spec.name))
    df = join_outcomes(preds, outcomes, max_delay_s)
    champ = df.filter((pl.col("role") == "champion") & (pl.col("version") == spec.champion))
    report: dict = {
        "model": spec.name,
        "revision": spec.revision,
        "threshold": spec.threshold,
        "alpha": alpha,
        "max_delay_s": max_delay_s,
        "champion": {
            "version": spec.champion,
            **_metrics(champ, spec.threshold, reps, alpha, seed),
        },
        "arms": [],
        "shadows": [],
    }
    arm_rows = df.filter(pl.col("role") == "arm")
    for (name, version), g in sorted(arm_rows.group_by(["arm", "version"]), key=lambda kv: kv[0]):
        status = next((a.stopped or "live" for a in spec.arms if a.name == name), "retired")
        report["arms"].append(
            {
                "name": name,
                "version": version,
                "status": status,
                **_metrics(g, spec.threshold, reps, alpha, seed),
                "vs_champion": _unpaired(champ, g, spec, alpha, business),
            }
        )
    shadow_rows = df.filter(pl.col("role") == "shadow")
    for (version,), g in sorted(shadow_rows.group_by(["version"]), key=lambda kv: kv[0]):
        report["shadows"].append(
            {
                "version": version,
                "live": version in spec.shadows,
                **_metrics(g, spec.threshold, reps, alpha, seed),
                "vs_champion": _paired(champ, g, spec, reps, alpha, seed),
            }
        )
    return _clean(report)


_PRED_COLUMNS = [
    "request_id",
    "ts",
    "entity_key",
    "model",
    "version",
    "role",
    "arm",
    "score",
    "latency_ms",
    "error",
]


def experiment_report(models_dir: Path | str, offline_dir: Path | str, name: str, **kwargs) -> dict:
    """The report for model ``name`` from its current spec and the logged Parquet data.

    This is what ``tessera experiment report`` prints and ``GET /v1/experiments/{name}`` serves.
    """
    spec = DeploymentStore(models_dir).current(name)
    pred_dir, out_dir = dataset_dirs(offline_dir)
    preds = read_dataset(pred_dir, PREDICTION_SCHEMA, columns=_PRED_COLUMNS)
    outcomes = read_dataset(out_dir, OUTCOME_SCHEMA)
    return build_report(preds, outcomes, spec, **kwargs)


def _fmt(x, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def format_report(r: dict) -> str:
    """A terminal-sized summary of ``build_report``'s output."""
    lines = [
        f"experiment {r['model']} (spec revision {r['revision']}, threshold {r['threshold']}, "
        f"alpha {r['alpha']})",
        f"{'who':<24}{'preds':>9}{'labelled':>9}{'AUC':>8}{'logloss':>9}{'Brier':>8}"
        f"{'mean':>8}{'p50 ms':>8}{'p99 ms':>8}{'errors':>8}",
    ]

    def row(label: str, m: dict) -> str:
        return (
            f"{label:<24}{m['predictions']:>9}{m['labelled']:>9}{_fmt(m['auc']):>8}"
            f"{_fmt(m['logloss']):>9}{_fmt(m['brier']):>8}{_fmt(m['mean_score']):>8}"
            f"{_fmt(m['p50_ms'], '.3f'):>8}{_fmt(m['p99_ms'], '.3f'):>8}{m['errors']:>8}"
        )

    c = r["champion"]
    lines.append(row(f"champion v{c['version']}", c))
    for a in r["arms"]:
        lines.append(row(f"arm {a['name']} v{a['version']}", a))
    for s in r["shadows"]:
        lines.append(row(f"shadow v{s['version']}", s))
    lines.append("")
    for a in r["arms"]:
        vs = a["vs_champion"]
        bt = vs["business_test"]
        head = f"arm {a['name']} v{a['version']} ({a['status']})"
        lines.append(f"{head}: {vs['verdict']['sentence']}")
        lines.append(
            f"  {vs['business_metric']}: {_fmt(bt['rate_b'])} vs {_fmt(bt['rate_a'])} "
            f"(two-proportion p={_fmt(bt['p_value'], '.2g')})"
        )
    for s in r["shadows"]:
        vs = s["vs_champion"]
        bt = vs["business_test"]
        ci = vs.get("ci_diff", {}).get("auc_diff")
        lines.append(f"shadow v{s['version']}: {vs['verdict']['sentence']}")
        lines.append(
            f"  score correlation {_fmt(vs['score_correlation'], '.3f')}, agreement at threshold "
            f"{_fmt(vs['agreement_at_threshold'], '.3f')}, accuracy {_fmt(bt['rate_b'])} vs "
            f"{_fmt(bt['rate_a'])} (McNemar p={_fmt(bt['p_value'], '.2g')})"
            + (f", AUC diff CI [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")
        )
    return "\n".join(lines)
