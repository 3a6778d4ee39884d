"""Guardrails: stop an A/B arm when its recent error rate or p99 latency breaches a threshold.

Each arm keeps its last ``window`` outcomes (latency, failed?) in a ring; the check runs every
``check_every`` observations so a request pays an append, not a percentile.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from serving.experiments.spec import Guardrails


class GuardrailMonitor:
    def __init__(self, rules: Guardrails, check_every: int = 50) -> None:
        self.rules = rules
        self.check_every = check_every
        self._recent: dict[str, deque[tuple[float, bool]]] = {}
        self._seen: dict[str, int] = {}

    def observe(self, arm: str, latency_ms: float, failed: bool) -> str | None:
        """Record one request; returns why the arm must stop, or None."""
        ring = self._recent.get(arm)
        if ring is None:
            ring = self._recent[arm] = deque(maxlen=self.rules.window)
        ring.append((latency_ms, failed))
        n = self._seen[arm] = self._seen.get(arm, 0) + 1
        if n % self.check_every or len(ring) < self.rules.min_requests:
            return None
        return self.breach(arm)

    def breach(self, arm: str) -> str | None:
        ring = self._recent.get(arm)
        if not ring or len(ring) < self.rules.min_requests:
            return None
        arr = np.array(ring, dtype=float)
        err = float(arr[:, 1].mean())
        if err > self.rules.max_error_rate:
            return (
                f"error rate {err:.1%} over the last {len(ring)} requests exceeds "
                f"{self.rules.max_error_rate:.1%}"
            )
        ok = arr[arr[:, 1] == 0, 0]
        p99 = float(np.percentile(ok, 99)) if ok.size else 0.0
        if p99 > self.rules.max_p99_ms:
            return (
                f"p99 latency {p99:.1f} ms over the last {len(ring)} requests exceeds "
                f"{self.rules.max_p99_ms:.1f} ms"
            )
        return None

    def reset(self, arm: str) -> None:
        self._recent.pop(arm, None)
        self._seen.pop(arm, None)
