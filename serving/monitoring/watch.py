"""Run the monitor on a timer, so alerts fire without anyone polling the report.

One daemon thread checks every model ``names()`` returns, every ``interval_s``, through one
``Alerter`` (which only speaks when an alert turns on or off). A failing model (no reference
yet, unreadable log) is logged and skipped; the others are still checked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import polars as pl

from features.errors import TesseraError
from serving.monitoring.alerts import Alerter
from serving.monitoring.drift import Thresholds
from serving.monitoring.routes import run_monitor
from serving.monitoring.sources import ReferenceLookup

log = logging.getLogger(__name__)


class MonitorWatch:
    def __init__(
        self,
        names: Callable[[], list[str]],
        lookup: ReferenceLookup,
        predictions: Callable[[], pl.DataFrame],
        alerter: Alerter | None = None,
        interval_s: float = 60.0,
        rows: int | None = 5000,
        seconds: float | None = None,
        thresholds: Thresholds = Thresholds(),
    ) -> None:
        self.names, self.lookup, self.predictions = names, lookup, predictions
        self.alerter = alerter or Alerter()
        self.interval_s, self.rows, self.seconds, self.thresholds = (
            interval_s,
            rows,
            seconds,
            thresholds,
        )
        self.checks = 0
        self.last: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check_once(self) -> dict[str, dict]:
        """Monitor every model once (reading the log once); returns the reports by name."""
        frame = self.predictions()
        for name in self.names():
            try:
                self.last[name] = run_monitor(
                    name,
                    self.lookup,
                    lambda: frame,
                    self.rows,
                    self.seconds,
                    self.thresholds,
                    self.alerter,
                )
            except TesseraError as e:
                log.warning("monitor of %s skipped: %s", name, e)
        self.checks += 1
        return self.last

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_once()
            except Exception:  # keep watching: the next round may read a healthy log
                log.exception("monitor round failed")
            self._stop.wait(self.interval_s)

    def start(self) -> MonitorWatch:
        self._thread = threading.Thread(target=self._run, name="tessera-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
