"""Why the registry refuses a training run or a promotion (both are ``RegistryError``s)."""

from __future__ import annotations

from typing import Any

from features.errors import RegistryError


class TrainingRefused(RegistryError):
    """``tessera train`` will not register this run: the label, a parameter, the holdout or a
    metric is wrong. ``reason`` is a stable code (label_objective, unknown_param,
    holdout_too_small, nan_metric, ...)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class GateFailed(RegistryError):
    """A promotion to the champion alias failed its review gates; ``report`` holds every check.
    Pass ``override=True`` with a reason (``--override --why``) to promote anyway, audited."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report
