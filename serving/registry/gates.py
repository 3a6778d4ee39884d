"""Review gates: what a version must show before it becomes the champion.

A ``GatePolicy`` (minimum AUC, maximum calibration error, maximum AUC drop against the current
champion on the candidate's own holdout rows, per-segment minimum AUC and maximum gap) is
evaluated twice: when ``tessera train`` registers a version (stored in its metadata, under
``gates``) and whenever the ``champion`` alias is moved to it (``ModelRegistry.set_alias``: the
one place every promotion path goes through; appended to ``versions/{n}/gates.jsonl``). A
failing promotion raises ``GateFailed`` unless ``override=True`` with a reason, and the alias
audit record then says so.

The policy is read from ``{models}/{name}/gate_policy.json``, else ``{models}/gate_policy.json``,
else ``DEFAULT_POLICY``. A check without evidence (a version registered without holdout rows,
or no champion yet) is *skipped*, never passed silently: its result says why. A segment check
the policy asks for but the version cannot answer (trained without ``--segment COL``) fails.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from serving.registry import evaluation
from serving.registry.errors import GateFailed

POLICY_FILE = "gate_policy.json"


@dataclass(frozen=True)
class GatePolicy:
    """Limits a champion must meet; None switches a check off."""

    min_auc: float | None = 0.6
    max_calibration_error: float | None = 0.15
    max_auc_drop: float | None = 0.02  # champion AUC - candidate AUC, same holdout rows
    segment: str | None = None  # holdout column kept with `tessera train --segment COL`
    min_segment_auc: float | None = None
    max_segment_gap: float | None = None  # best segment AUC - worst segment AUC
    min_segment_rows: int = 50  # smaller segments (or one class only) are not judged

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GatePolicy:
        from features.errors import RegistryError

        names = {f.name for f in fields(cls)}
        if not isinstance(d, dict):
            raise RegistryError("a gate policy is a JSON object of limits, e.g. {\"min_auc\": 0.7}")
        unknown = sorted(set(d) - names)
        if unknown:
            raise RegistryError(f"unknown gate policy keys {unknown}; known: {sorted(names)}")
        for k, v in d.items():
            if k == "segment":
                ok, want = v is None or (isinstance(v, str) and bool(v)), "a column name or null"
            elif k == "min_segment_rows":
                ok, want = type(v) is int and v >= 1, "a whole number >= 1"
            else:
                ok = v is None or (type(v) in (int, float) and math.isfinite(v))
                want = "a number or null"
            if not ok:
                raise RegistryError(f"gate policy {k!r} must be {want}, got {v!r}")
        policy = cls(**d)
        if (policy.min_segment_auc is not None or policy.max_segment_gap is not None) and (
            not policy.segment
        ):
            raise RegistryError("min_segment_auc / max_segment_gap need 'segment': a column name")
        return policy

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_POLICY = GatePolicy()


def load_policy(storage: Any, name: str | None) -> GatePolicy:
    for rel in ((f"{name}/{POLICY_FILE}",) if name else ()) + (POLICY_FILE,):
        if storage.exists(rel):
            return GatePolicy.from_dict(json.loads(storage.read_bytes(rel)))
    return DEFAULT_POLICY


def _check(check: str, passed: bool | None, value: Any = None, limit: Any = None,
           detail: str = "") -> dict[str, Any]:
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    return {"check": check, "passed": passed, "value": value, "limit": limit, "detail": detail}


def _segment_checks(policy: GatePolicy, y, p, holdout: pa.Table | None) -> list[dict]:
    wanted = [(k, getattr(policy, k)) for k in ("min_segment_auc", "max_segment_gap")
              if getattr(policy, k) is not None]
    if not wanted:
        return []
    col = f"s:{policy.segment}"
    if holdout is None or col not in holdout.column_names:
        why = (f"no holdout column {policy.segment!r}: train with --segment {policy.segment}")
        return [_check(k, False, None, lim, why) for k, lim in wanted]
    m = evaluation.by_segment(y, p, holdout[col].to_numpy(zero_copy_only=False),
                              min_rows=policy.min_segment_rows)
    aucs = {r["segment"]: r["auc"] for r in m["segments"] if r["judged"]}
    if not aucs:
        why = f"no {policy.segment} segment has {policy.min_segment_rows} rows and both classes"
        return [_check(k, False, None, lim, why) for k, lim in wanted]
    worst = min(aucs, key=aucs.get)
    best = max(aucs, key=aucs.get)
    out = []
    for k, lim in wanted:
        if k == "min_segment_auc":
            out.append(_check(k, aucs[worst] >= lim, aucs[worst], lim,
                              f"worst {policy.segment}={worst} of {len(aucs)}"))
        else:
            gap = aucs[best] - aucs[worst]
            out.append(_check(k, gap <= lim, gap, lim,
                              f"{policy.segment}={best} {aucs[best]:.4f} vs {worst} "
                              f"{aucs[worst]:.4f}"))
    out.append(_check("segments", None, {s: round(a, 4) for s, a in aucs.items()}, None,
                      f"AUC per {policy.segment} (informational)"))
    return out


def evaluate(
    policy: GatePolicy,
    metrics: dict[str, Any],
    holdout: pa.Table | None,
    champion: Any = None,
    stage: str = "register",
) -> dict[str, Any]:
    """Every check of ``policy`` on one candidate: its holdout rows when it has them, else its
    recorded ``metrics``; ``champion`` (a ``ModelVersion``) is scored on the same rows."""
    if holdout is not None:
        y = holdout["label"].to_numpy()
        p = holdout["score"].to_numpy()
        s = evaluation.summary(y, p)
    else:
        y = p = None
        s = {k: metrics.get(k) for k in ("auc", "calibration_error")}
    checks = []
    for key, metric, better in (("min_auc", "auc", "ge"),
                                ("max_calibration_error", "calibration_error", "le")):
        lim = getattr(policy, key)
        if lim is None:
            continue
        v = s.get(metric)
        if v is None or not math.isfinite(v):
            checks.append(_check(key, None, None, lim, f"no holdout {metric} recorded"))
        else:
            checks.append(_check(key, v >= lim if better == "ge" else v <= lim, v, lim))
    if policy.max_auc_drop is not None:
        checks.append(_drop_check(policy.max_auc_drop, y, p, holdout, champion))
    if y is not None:
        checks.extend(_segment_checks(policy, y, p, holdout))
    elif policy.segment and (policy.min_segment_auc is not None or policy.max_segment_gap
                             is not None):
        checks.extend(_segment_checks(policy, None, None, None))
    failed = [c["check"] for c in checks if c["passed"] is False]
    return {
        "stage": stage,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "passed": not failed,
        "failed": failed,
        "against": getattr(champion, "version", None),
        "policy": policy.to_dict(),
        "checks": checks,
    }


def _drop_check(limit: float, y, p, holdout: pa.Table | None, champion: Any) -> dict:
    if champion is None:
        return _check("max_auc_drop", None, None, limit, "no champion to compare with")
    if holdout is None:
        return _check("max_auc_drop", None, None, limit, "no holdout rows stored")
    cols = [f"f:{r}" for r in champion.features]
    missing = [c[2:] for c in cols if c not in holdout.column_names]
    if missing:
        return _check("max_auc_drop", None, None, limit,
                      f"champion v{champion.version} reads {missing}, not in this holdout")
    x = np.column_stack([holdout[c].to_numpy() for c in cols]) if cols else np.empty((len(y), 0))
    champ_auc = evaluation.auc(y, champion.booster().predict(x))
    mine = evaluation.auc(y, p)
    drop = champ_auc - mine
    return _check("max_auc_drop", bool(drop <= limit), drop, limit,
                  f"champion v{champion.version} AUC {champ_auc:.4f} vs {mine:.4f} on the same "
                  f"{len(y)} holdout rows")


def describe_failure(name: str, version: str, report: dict[str, Any]) -> str:
    parts = []
    for c in report["checks"]:
        if c["passed"] is False:
            v = "n/a" if c["value"] is None else (
                f"{c['value']:.4f}" if isinstance(c["value"], float) else str(c["value"]))
            parts.append(f"{c['check']}: {v} (limit {c['limit']})"
                         + (f" - {c['detail']}" if c["detail"] else ""))
    return (f"{name} v{version} fails its review gates: {'; '.join(parts)}. Fix the model, "
            "change the policy (tessera models policy), or promote anyway with "
            "--override --why '...' (audited)")


def refuse(name: str, version: str, report: dict[str, Any]) -> None:
    raise GateFailed(describe_failure(name, version, report), report)


def table_to_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def table_from_bytes(data: bytes) -> pa.Table:
    # a BufferReader, not BytesIO: pyarrow 26 can abort at exit after a threaded read of a
    # Python file object ("terminate called without an active exception")
    return pq.read_table(pa.BufferReader(data))


class GatedAliasSetter:
    """The ``set_alias`` callable `tessera promote` / `deploy` hand to
    ``serving.experiments.promote``: ``check`` (called before the spec revision is written)
    refuses a failing champion, the call moves the alias (gated again, audited)."""

    def __init__(self, registry: Any, why: str, who: str | None = None,
                 override: bool = False, gate: bool = True) -> None:
        self.registry = registry
        self.why = why
        self.who = who
        self.override = override
        self.gate = gate

    def check(self, name: str, version: str) -> dict[str, Any] | None:
        if not self.gate:
            return None
        return self.registry.check_gates(name, version, override=self.override, why=self.why)

    def __call__(self, name: str, alias: str, version: str) -> dict[str, Any]:
        return self.registry.set_alias(name, alias, version, who=self.who, why=self.why,
                                       override=self.override, gate=self.gate)
