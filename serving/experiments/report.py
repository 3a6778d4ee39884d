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

from features.offline.storage import is_uri
from serving.experiments import sequential, stats
from serving.experiments.errors import ExperimentError
from serving.experiments.join import join_outcomes
from serving.experiments.records import OUTCOME_SCHEMA, PREDICTION_SCHEMA
from serving.experiments.segments import segment_metrics, with_segments
from serving.experiments.sink import read_dataset
from serving.experiments.spec import DeploymentSpec, DeploymentStore


def under(root: Path | str, *parts: str) -> str:
    """``root`` (a folder or a URI) joined with ``parts``. ``Path`` would turn ``s3://b/x`` into
    ``s3:/b/x``; a URI's query (``?endpoint_override=...``) stays at the end, where ``Store``
    reads it."""
    text = str(root)
    if not is_uri(text):
        return str(Path(text).joinpath(*parts))
    base, q, query = text.partition("?")
    return "/".join([base.rstrip("/"), *parts]) + q + query


def dataset_dirs(offline_dir: Path | str) -> tuple[str, str]:
    """Where the sink writes predictions and outcomes: ``experiments/`` under the event log's
    location (``Settings.offline_location``), so an ``offline_uri`` bucket holds them too."""
    return under(offline_dir, "experiments", "predictions"), under(
        offline_dir, "experiments", "outcomes")


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


def _fixed(v: stats.Verdict) -> dict:
    return {"kind": "fixed-horizon (valid at one pre-planned look)", **asdict(v)}


def _decision(main: sequential.Sequence, other: dict[str, sequential.Sequence], who: str) -> dict:
    """The anytime-valid decision (from ``main``) with every sequence it was chosen among."""
    return {
        "decision": main.decision,
        "metric": main.metric,
        "labels": main.labels,
        "decided_at": main.decided_at,
        "sentence": main.sentence(who),
        **{name: s.to_dict(who) for name, s in other.items()},
    }


def _paired(
    champ: pl.DataFrame, other: pl.DataFrame, spec: DeploymentSpec, reps, alpha, seed, seq_opts
):
    pairs = (
        champ.select("request_id", "ts", pl.col("score").alias("s_a"), "label")
        .join(
            other.select("request_id", pl.col("score").alias("s_b")), on="request_id", how="inner"
        )
        .drop_nulls(["s_a", "s_b"])
    )
    a_all, b_all = pairs["s_a"].to_numpy(), pairs["s_b"].to_numpy()
    lab = pairs.drop_nulls("label").sort("ts", maintain_order=True)
    y = lab["label"].to_numpy() >= 0.5
    a, b = lab["s_a"].to_numpy(), lab["s_b"].to_numpy()
    test = stats.delong_paired(y, a, b)
    t = spec.threshold
    ok_a, ok_b = (a >= t) == y, (b >= t) == y
    business = stats.mcnemar(ok_a, ok_b)
    loss = sequential.paired_sequence(
        sequential.per_request_logloss(y, a) - sequential.per_request_logloss(y, b),
        "logloss",
        "champion minus challenger",
        alpha=alpha,
        **seq_opts,
    )
    acc = sequential.paired_sequence(
        ok_b.astype(float) - ok_a.astype(float),
        "accuracy",
        "challenger minus champion",
        alpha=alpha,
        **seq_opts,
    )
    out = {
        "paired_requests": pairs.height,
        "paired_labelled": lab.height,
        "score_correlation": stats.correlation(a_all, b_all),
        "agreement_at_threshold": stats.agreement(a_all, b_all, t),
        "auc_test": asdict(test),
        "business_metric": "accuracy",
        "business_test": asdict(business),
        "sequential": _decision(loss, {"logloss": loss, "accuracy": acc}, "challenger"),
        "verdict": _fixed(stats.verdict(test, lab.height, alpha=alpha)),
    }
    if reps and y.size:
        cis = stats.bootstrap_cis(y, b, a, reps, alpha, seed)
        out["ci_diff"] = {k: list(v) for k, v in cis.items() if k.endswith("_diff")}
    return out


def _unpaired(
    champ: pl.DataFrame,
    arm: pl.DataFrame,
    spec: DeploymentSpec,
    alpha,
    business,
    seq_opts,
    decide_on: str = "logloss",
):
    def parts(g):
        lab = g.drop_nulls(["label", "score"])
        y = lab["label"].to_numpy() >= 0.5
        s = lab["score"].to_numpy()
        hit = (s >= spec.threshold) == y if business == "accuracy" else y
        return y, s, hit.astype(float), lab["ts"].to_numpy()

    ya, sa, ha, ta = parts(champ)
    yb, sb, hb, tb = parts(arm)
    test = stats.delong_unpaired(ya, sa, yb, sb)
    loss = sequential.unpaired_sequence(
        sequential.per_request_logloss(ya, sa),
        ta,
        sequential.per_request_logloss(yb, sb),
        tb,
        "logloss",
        higher_is_better=False,
        alpha=alpha,
        **seq_opts,
    )
    biz = sequential.unpaired_sequence(
        ha, ta, hb, tb, business, higher_is_better=True, alpha=alpha, **seq_opts
    )
    main = biz if decide_on == "business" else loss
    return {
        "auc_test": asdict(test),
        "business_metric": business,
        "business_test": asdict(
            stats.two_proportion_z(int(ha.sum()), ya.size, int(hb.sum()), yb.size)
        ),
        "sequential": _decision(main, {"logloss": loss, business: biz}, "arm"),
        "verdict": _fixed(stats.verdict(test, ya.size + yb.size, alpha=alpha, who="arm")),
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
    t_star: float = 5000,
    min_labels: int = 100,
    decide_on: str = "logloss",
    segment_col: str | None = None,
    segments: pl.DataFrame | None = None,
) -> dict:
    """The report as plain JSON-able data (NaN becomes None).

    With ``segment_col`` every participant also gets ``segments``: per-segment AUC,
    calibration error and positive rate and the gap between segments
    (``segments.segment_metrics``); the column comes from the ``segments`` lookup (keyed by
    ``request_id`` or ``entity_key``) or else must be a column of the prediction log.

    Each arm and shadow carries ``vs_champion.sequential``: the anytime-valid decision
    (better / worse / keep collecting) from confidence sequences of the per-request logloss
    (arms: or of the business metric, ``decide_on="business"``), safe to read after every
    label; ``vs_champion.verdict`` is the fixed-horizon DeLong verdict, valid only at one
    look planned in advance.
    """
    if decide_on not in ("logloss", "business"):
        raise ExperimentError(f"decide_on must be 'logloss' or 'business', not {decide_on!r}")
    seq_opts = {"t_star": t_star, "min_labels": min_labels}
    preds = preds.filter(pl.col("model") == spec.name)
    outcomes = outcomes.filter(pl.col("model").is_null() | (pl.col("model") == spec.name))
    df = join_outcomes(preds, outcomes, max_delay_s)
    if segment_col is not None and segments is not None:
        df = with_segments(df, segments, segment_col)

    def by_segment(g: pl.DataFrame) -> dict:
        return {"segments": segment_metrics(g, segment_col)} if segment_col else {}

    champ = df.filter((pl.col("role") == "champion") & (pl.col("version") == spec.champion))
    report: dict = {
        "model": spec.name,
        "revision": spec.revision,
        "threshold": spec.threshold,
        "alpha": alpha,
        "max_delay_s": max_delay_s,
        "sequential": {"t_star": t_star, "min_labels": min_labels, "decide_on": decide_on},
        "champion": {
            "version": spec.champion,
            **_metrics(champ, spec.threshold, reps, alpha, seed),
            **by_segment(champ),
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
                **by_segment(g),
                "vs_champion": _unpaired(champ, g, spec, alpha, business, seq_opts, decide_on),
            }
        )
    shadow_rows = df.filter(pl.col("role") == "shadow")
    for (version,), g in sorted(shadow_rows.group_by(["version"]), key=lambda kv: kv[0]):
        report["shadows"].append(
            {
                "version": version,
                "live": version in spec.shadows,
                **_metrics(g, spec.threshold, reps, alpha, seed),
                **by_segment(g),
                "vs_champion": _paired(champ, g, spec, reps, alpha, seed, seq_opts),
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
    """The report for model ``name`` from its current spec and the logged Parquet data
    (``offline_dir``: ``Settings.offline_location``, a folder or a bucket URI).

    This is what ``tessera experiment report`` prints and ``GET /v1/experiments/{name}`` serves.
    """
    spec = DeploymentStore(models_dir).current(name)
    pred_dir, out_dir = dataset_dirs(offline_dir)
    preds = read_dataset(pred_dir, PREDICTION_SCHEMA, columns=_PRED_COLUMNS)
    outcomes = read_dataset(out_dir, OUTCOME_SCHEMA)
    return build_report(preds, outcomes, spec, **kwargs)


def labelled_predictions(
    offline_dir: Path | str,
    name: str,
    max_delay_s: float = 7 * 86_400,
    segment_col: str | None = None,
    segments: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The champion's logged predictions of ``name`` with their labels (null until one arrives
    in time), plus ``segment_col`` from the ``segments`` lookup: what the segment monitor
    (``serving.monitoring.watch.SegmentWatch``) reads."""
    pred_dir, out_dir = dataset_dirs(offline_dir)
    preds = read_dataset(pred_dir, PREDICTION_SCHEMA, columns=_PRED_COLUMNS).filter(
        (pl.col("model") == name) & (pl.col("role") != "shadow")
    )
    outcomes = read_dataset(out_dir, OUTCOME_SCHEMA)
    outcomes = outcomes.filter(pl.col("model").is_null() | (pl.col("model") == name))
    df = join_outcomes(preds, outcomes, max_delay_s).filter(pl.col("role") == "champion")
    if segment_col is not None and segments is not None:
        df = with_segments(df, segments, segment_col)
    return df


def _fmt(x, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _seq_line(vs: dict) -> str:
    seq = vs.get("sequential") or {}
    return f"[anytime-valid] {seq.get('sentence', 'no sequential test')}"


def _seq_others(vs: dict) -> list[str]:
    seq = vs.get("sequential") or {}
    return [
        f"  also anytime-valid: {v['sentence']}"
        for k, v in seq.items()
        if isinstance(v, dict) and k != seq.get("metric")
    ]


def _segment_lines(label: str, sm: dict) -> list[str]:
    parts = [
        f"{x['segment']} AUC {_fmt(x['auc'], '.3f')} cal.err {_fmt(x['calibration_error'], '.3f')}"
        f" pos {_fmt(x['positive_rate'], '.3f')} n={x['labelled']}" + ("" if x["judged"] else "*")
        for x in sm["segments"]
    ]
    gap = sm["gap"]
    return [
        f"{label} by {sm['segment_col']}: " + "; ".join(parts),
        f"  gap between segments: AUC {_fmt(gap.get('auc'), '.3f')}, calibration error "
        f"{_fmt(gap.get('calibration_error'), '.3f')}, positive rate "
        f"{_fmt(gap.get('positive_rate'), '.3f')}"
        + (
            f" (* fewer than {sm['min_labelled']} labels: not judged)"
            if any(not x["judged"] for x in sm["segments"])
            else ""
        ),
    ]


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
    seg_lines = []
    for label, m in (
        [(f"champion v{c['version']}", c)]
        + [(f"arm {a['name']} v{a['version']}", a) for a in r["arms"]]
        + [(f"shadow v{s['version']}", s) for s in r["shadows"]]
    ):
        if m.get("segments"):
            seg_lines.extend(_segment_lines(label, m["segments"]))
    if seg_lines:
        lines.append("")
        lines.extend(seg_lines)
    lines.append("")
    for a in r["arms"]:
        vs = a["vs_champion"]
        bt = vs["business_test"]
        head = f"arm {a['name']} v{a['version']} ({a['status']})"
        lines.append(f"{head}: {_seq_line(vs)}")
        lines.extend(_seq_others(vs))
        lines.append(f"  fixed-horizon, one look only: {vs['verdict']['sentence']}")
        lines.append(
            f"  fixed-horizon {vs['business_metric']}: {_fmt(bt['rate_b'])} vs "
            f"{_fmt(bt['rate_a'])} (two-proportion p={_fmt(bt['p_value'], '.2g')})"
        )
    for s in r["shadows"]:
        vs = s["vs_champion"]
        bt = vs["business_test"]
        ci = vs.get("ci_diff", {}).get("auc_diff")
        lines.append(f"shadow v{s['version']}: {_seq_line(vs)}")
        lines.extend(_seq_others(vs))
        lines.append(f"  fixed-horizon, one look only: {vs['verdict']['sentence']}")
        lines.append(
            f"  score correlation {_fmt(vs['score_correlation'], '.3f')}, agreement at threshold "
            f"{_fmt(vs['agreement_at_threshold'], '.3f')}, accuracy {_fmt(bt['rate_b'])} vs "
            f"{_fmt(bt['rate_a'])} (McNemar p={_fmt(bt['p_value'], '.2g')})"
            + (f", AUC diff CI [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")
        )
    return "\n".join(lines)
