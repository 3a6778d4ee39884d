"""A model card: everything a reviewer needs about one version, as data and as text.

Built from what the registry stores with the version (metadata, holdout rows, gate results,
aliases), never from the training set itself, so it can be shown where only the models folder
is: `tessera models show NAME@ALIAS` prints ``format_card``, ``/ui/models/{name}`` draws it.
"""

from __future__ import annotations

import math
from typing import Any

from serving.registry import evaluation
from serving.registry.registry import ModelRegistry


def parse_ref(text: str, ref: str | None = None) -> tuple[str, str]:
    """``NAME@REF`` (or ``NAME`` and a separate ``ref``; default ``latest``) -> (name, ref)."""
    name, sep, at = text.partition("@")
    return name, (at if sep and at else (ref or "latest"))


def build_card(registry: ModelRegistry, name: str, ref: str = "latest") -> dict[str, Any]:
    version = registry.resolve(name, ref)
    meta = registry.metadata(name, version)
    views = meta.get("feature_views") or {}
    importance = meta.get("importance") or _gain_from_model(registry, name, version)
    total = sum(importance.values()) or 1.0
    features = [
        {"ref": r, "view": r.split(":", 1)[0] if ":" in r else None,
         "view_version": views.get(r.split(":", 1)[0]) if ":" in r else None,
         "gain": importance.get(r), "gain_share": (importance.get(r) or 0.0) / total}
        for r in meta.get("features", [])
    ]
    card: dict[str, Any] = {
        "name": name,
        "version": version,
        "aliases": sorted(a for a, v in registry.aliases(name).items() if v == version),
        "created": meta.get("created"),
        "created_by": meta.get("created_by"),
        "objective": meta.get("objective") or (meta.get("params") or {}).get("objective"),
        "label": meta.get("label"),
        "seed": meta.get("seed"),
        "lightgbm_version": meta.get("lightgbm_version"),
        "training_set": meta.get("training_set") or {},
        "params": meta.get("params") or {},
        "metrics": meta.get("metrics") or {},
        "features": features,
        "gates": registry.gate_history(name, version),
        "policy": registry.gate_policy(name).to_dict(),
        "roc": [], "calibration": [], "segments": {},
    }
    hold = registry.holdout(name, version)
    if hold is not None:
        y, p = hold["label"].to_numpy(), hold["score"].to_numpy()
        card["roc"] = evaluation.roc_points(y, p)
        card["calibration"] = evaluation.reliability(y, p)
        card["holdout_rows_stored"] = hold.num_rows
        for col in hold.column_names:
            if col.startswith("s:"):
                card["segments"][col[2:]] = evaluation.by_segment(
                    y, p, hold[col].to_numpy(zero_copy_only=False))
    return card


def _gain_from_model(registry: ModelRegistry, name: str, version: str) -> dict[str, float]:
    """Gain importance from the model text, for versions registered before it was recorded."""
    mv = registry.get(name, version)
    gain = mv.booster().feature_importance("gain")
    return {r: float(g) for r, g in zip(mv.features, gain, strict=False)}


def _num(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4f}"
    return "n/a" if v is None else str(v)


def format_card(card: dict[str, Any]) -> str:
    """The card as plain text for a terminal."""
    lines = [f"{card['name']} v{card['version']}"
             + (f"  ({', '.join(card['aliases'])})" if card["aliases"] else "")]
    lines.append(f"  created {card['created'] or '?'} by {card['created_by'] or '?'}; "
                 f"LightGBM {card['lightgbm_version'] or '?'}; objective {card['objective']}; "
                 f"label {card['label']!r}; seed {card['seed']}")
    ts = card["training_set"]
    lines.append(f"  training set: {ts.get('path', '?')}  fingerprint {ts.get('fingerprint')}")
    m = card["metrics"]
    lines.append("\nMetrics (time holdout)")
    lines.append(f"  AUC {_num(m.get('auc'))}  logloss {_num(m.get('logloss'))}  calibration "
                 f"error {_num(m.get('calibration_error'))}  positive rate "
                 f"{_num(m.get('positive_rate'))}")
    lines.append(f"  {m.get('train_rows', '?')} training rows, {m.get('holdout_rows', '?')} "
                 f"holdout rows from {m.get('holdout_from', '?')}")
    lines.append("\nFeatures (view version, gain share)")
    width = max((len(f["ref"]) for f in card["features"]), default=10)
    for f in sorted(card["features"], key=lambda f: -(f["gain"] or 0)):
        bar = "#" * round(f["gain_share"] * 30)
        lines.append(f"  {f['ref']:<{width}}  v{f['view_version'] or '?':<4} "
                     f"{f['gain_share']:6.1%} {bar}")
    lines.append("\nParameters")
    for k, v in sorted(card["params"].items()):
        lines.append(f"  {k} = {v}")
    lines.append("\nReview gates")
    if not card["gates"]:
        lines.append("  never evaluated (registered without `tessera train`)")
    for g in card["gates"]:
        verdict = "PASSED" if g["passed"] else ("OVERRIDDEN" if g.get("override") else "FAILED")
        against = f" against v{g['against']}" if g.get("against") else ""
        lines.append(f"  {g['stage']} {g['when']}{against}: {verdict}")
        for c in g["checks"]:
            mark = {True: "pass", False: "FAIL", None: "skip"}[c["passed"]]
            value = c["value"] if isinstance(c["value"], dict) else _num(c["value"])
            limit = "" if c["limit"] is None else f" (limit {c['limit']})"
            detail = f" - {c['detail']}" if c["detail"] else ""
            lines.append(f"    {mark:4} {c['check']}: {value}{limit}{detail}")
    for col, segs in card["segments"].items():
        lines.append(f"\nBy {col} (AUC gap {_num(segs['gap']['auc'])})")
        for s in segs["segments"]:
            lines.append(f"  {s['segment']}: {s['labelled']} rows, AUC {_num(s['auc'])}, "
                         f"calibration error {_num(s['calibration_error'])}, positive rate "
                         f"{_num(s['positive_rate'])}" + ("" if s["judged"] else " (too few)"))
    if card["calibration"]:
        lines.append("\nCalibration (score bin: mean score -> positive rate, rows)")
        for b in card["calibration"]:
            lines.append(f"  {b['lo']:.1f}-{b['hi']:.1f}: {b['mean_score']:.3f} -> "
                         f"{b['positive_rate']:.3f} ({b['count']})")
    return "\n".join(lines)
