"""What the dashboard shows, as providers: plain callables returning JSON-able rows.

Every provider is optional and may fail; the page then says "no data yet" for that panel (or
shows the error) instead of failing as a whole. Row shapes:

- ``freshness() -> [{"view", "age_s", "lag"?}]``: age of the newest event applied per view.
- ``throughput() -> [{"name", "per_s", "total"?}]``: events or requests per second.
- ``monitors() -> [MonitorReport.to_dict()]``: drift per feature with live/reference histograms.
- ``experiments() -> [experiment report dict]`` as built by ``serving.experiments.report``.
- ``lineage() -> [{"model", "version", "parent"?, "created"?, "training_set"?, "metrics"?,
  "aliases"?}]``.
- ``audit() -> [{"when", "who", "why", "before"?, "after"?, "alias"?, ...}]``, newest last.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from serving.monitoring.drift import finite

log = logging.getLogger(__name__)

Provider = Callable[[], list[dict]]


@dataclass
class DashboardData:
    freshness: Provider | None = None
    throughput: Provider | None = None
    monitors: Provider | None = None
    experiments: Provider | None = None
    lineage: Provider | None = None
    audit: Provider | None = None

    def snapshot(self) -> dict[str, dict]:
        """Call every provider once: ``{panel: {"rows": [...]} | {"error": "..."}}``."""
        out: dict[str, dict] = {}
        for f in fields(self):
            provider = getattr(self, f.name)
            if provider is None:
                out[f.name] = {"rows": []}
                continue
            try:
                out[f.name] = {"rows": finite(list(provider() or []))}
            except Exception as e:  # a broken source must not take the page down
                log.warning("dashboard panel %s failed: %r", f.name, e)
                out[f.name] = {"rows": [], "error": f"{type(e).__name__}: {e}"}
        return out


def audit_files(models_dir: Path | str, limit: int = 50) -> Provider:
    """The audit log (``serving.auth.audit``: every model's alias and deployment records and
    the system log of tokens, materialize, backfill and forget), newest ``limit``."""

    def read() -> list[dict]:
        from serving.auth.audit import entries

        return entries(models_dir, limit=limit)

    return read


def cached(provider: Provider, ttl_s: float) -> Provider:
    """``provider`` computed at most once per ``ttl_s``: page loads (and the page's own auto
    refresh, in every open tab) reuse the last rows instead of recomputing whole reports; loads
    that arrive while it is computing wait for that one computation. Failures are not cached."""
    if ttl_s <= 0:
        return provider
    lock = threading.Lock()
    last: list = []  # [(monotonic time, rows)]

    def read() -> list[dict]:
        with lock:
            if last and time.monotonic() - last[0][0] < ttl_s:
                return last[0][1]
            rows = list(provider() or [])
            last[:] = [(time.monotonic(), rows)]
            return rows

    return read
