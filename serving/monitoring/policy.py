"""When to retrain: on a drift alert, on a schedule, or after N new labels (any one suffices).

A policy file (YAML or JSON)::

    on_drift: true        # retrain while the monitor reports a drift alert
    every_hours: 168      # retrain when the last run started this long ago (or never ran)
    after_labels: 5000    # retrain once this many labels arrived since the last run

Absent keys are off. ``due`` is pure: the caller measures the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from serving.monitoring.errors import MonitorError


@dataclass(frozen=True)
class Policy:
    on_drift: bool = False
    every_hours: float | None = None
    after_labels: int | None = None

    @classmethod
    def load(cls, path: Path | str) -> Policy:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(raw) - {"on_drift", "every_hours", "after_labels"}
        if unknown:
            raise MonitorError(
                f"{path}: unknown policy keys {sorted(unknown)}; use on_drift, every_hours, "
                "after_labels"
            )
        return cls(**raw)


def due(
    policy: Policy,
    now_s: float,
    last_started_s: float | None,
    drift_alert: bool,
    new_labels: int,
) -> str | None:
    """Why a retrain is due now, or None when no rule fires."""
    if policy.on_drift and drift_alert:
        return "the monitor reports drift"
    if policy.every_hours is not None:
        if last_started_s is None:
            return "never retrained and a schedule is set"
        age_h = (now_s - last_started_s) / 3600
        if age_h >= policy.every_hours:
            return f"last retrain started {age_h:.1f} h ago (every {policy.every_hours:g} h)"
    if policy.after_labels is not None and new_labels >= policy.after_labels:
        return f"{new_labels} new labels since the last retrain (after {policy.after_labels})"
    return None
