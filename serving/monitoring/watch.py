"""Run the monitor on a timer, so alerts fire without anyone polling the report.

One daemon thread checks every model ``names()`` returns, every ``interval_s``, through one
``Alerter`` (which only speaks when an alert turns on or off). A failing model (no reference
yet, unreadable log) is logged and skipped; the others are still checked. ``segments`` adds
``SegmentWatch``es: a segment (e.g. one country) that degraded while the total did not.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import polars as pl

from features.errors import TesseraError
from serving.experiments.segments import segment_degradation, segment_metrics
from serving.monitoring.alerts import Alerter
from serving.monitoring.drift import Thresholds
from serving.monitoring.routes import run_monitor
from serving.monitoring.sources import ReferenceLookup

log = logging.getLogger(__name__)


class SegmentWatch:
    """One model's labelled predictions by ``segment_col``: the newest ``window`` labelled rows
    against the ``window`` before them (the baseline), alerting through the ``Alerter`` when a
    segment's AUC drops or its calibration error rises past the limits while the total's
    change stays within ``total_tolerance`` (default: the same limit, so the total alone would
    not alert).

    ``labelled()`` returns rows with ``ts``, ``label``, ``score`` and ``segment_col`` (e.g. the
    joined prediction log with a segment lookup: ``serving.experiments.segments.with_segments``).
    """

    def __init__(
        self,
        model: str,
        labelled: Callable[[], pl.DataFrame],
        segment_col: str,
        window: int = 5000,
        min_labelled: int = 200,
        max_auc_drop: float = 0.05,
        max_calibration_rise: float = 0.05,
        total_tolerance: float | None = None,
        version: str | None = None,
    ) -> None:
        self.model, self.labelled, self.segment_col = model, labelled, segment_col
        self.window, self.min_labelled, self.version = window, min_labelled, version
        self.limits = {
            "max_auc_drop": max_auc_drop,
            "max_calibration_rise": max_calibration_rise,
            "total_tolerance": total_tolerance,
        }

    def check(self, alerter: Alerter) -> dict:
        """One comparison; returns both summaries, the alerts and the events they raised."""
        df = (
            self.labelled()
            .filter(pl.col("label").is_not_null() & pl.col("score").is_not_null())
            .sort("ts")
        )
        now_rows = df.tail(self.window)
        base_rows = df.head(max(df.height - now_rows.height, 0)).tail(self.window)
        out: dict = {"model": self.model, "segment_col": self.segment_col, "alerts": []}
        if base_rows.height < self.min_labelled:
            out["waiting"] = (
                f"{df.height} labelled predictions; a baseline needs {self.window} newest plus "
                f"at least {self.min_labelled} before them"
            )
            out["events"] = alerter.observe_segments(
                self.model, self.version, self.segment_col, [], df.height
            )
            return out
        now = segment_metrics(now_rows, self.segment_col, min_labelled=self.min_labelled)
        base = segment_metrics(base_rows, self.segment_col, min_labelled=self.min_labelled)
        alerts = segment_degradation(now, base, **self.limits)
        out.update(now=now, baseline=base, alerts=[a.to_dict() for a in alerts])
        out["events"] = alerter.observe_segments(
            self.model, self.version, self.segment_col, alerts, now_rows.height
        )
        return out


class ExperimentGuard:
    """Statistical guardrails on a timer: for every model with a deployment spec, build the
    experiment report (no bootstrap) and ``autostop.enforce`` it: stop worse or failing arms,
    retire worse shadows, roll back a promoted champion found worse than the one it replaced.
    Actions are announced through the ``Alerter``, and so are arms the scorers' own online
    guardrails stopped since the guard started (the router writes the audited spec revision;
    this makes it an alert too). ``report_options`` go to the report (e.g. ``decide_on``)."""

    def __init__(
        self,
        models_dir,
        offline_dir,
        names: Callable[[], list[str]],
        registry=None,
        max_delay_s: float = 7 * 86_400,
        report_options: dict | None = None,
    ) -> None:
        from serving.experiments.spec import DeploymentStore

        self.models_dir, self.offline_dir, self.names = models_dir, offline_dir, names
        self.registry, self.max_delay_s = registry, max_delay_s
        self.report_options = report_options or {}
        self._stopped = self._stops(DeploymentStore(models_dir))  # announced (or already old)

    def _stops(self, store) -> set[tuple[str, str, str]]:
        out = set()
        for name in self.names():
            if store.revision(name):
                out |= {(name, a.name, a.stopped) for a in store.current(name).arms if a.stopped}
        return out

    def _announce_stops(self, store, alerter: Alerter, names: list[str]) -> list[dict]:
        events = []
        for key in sorted(self._stops(store) - self._stopped):
            name, arm, why = key
            spec = store.current(name)
            events.append(
                alerter.action(
                    {
                        "event": "tessera.experiment.action",
                        "action": "arm_stopped",
                        "by": "online guardrail",
                        "model": name,
                        "arm": arm,
                        "version": spec.arm(arm).version,
                        "why": f"stopped {arm}: {why}",
                        "revision": spec.revision,
                    }
                )
            )
            self._stopped.add(key)
        return events

    def check(self, alerter: Alerter) -> dict[str, list[dict]]:
        from serving.experiments.autostop import WHO, enforce, registry_set_alias
        from serving.experiments.report import experiment_report
        from serving.experiments.spec import DeploymentStore

        store = DeploymentStore(self.models_dir)
        set_alias = None if self.registry is None else registry_set_alias(self.registry, WHO)
        out: dict[str, list[dict]] = {}
        names = self.names()
        for e in self._announce_stops(store, alerter, names):
            out.setdefault(e["model"], []).append(e)
        for name in names:
            if store.revision(name) == 0:
                continue  # no deployment: nothing to guard
            try:
                report = experiment_report(
                    self.models_dir,
                    self.offline_dir,
                    name,
                    reps=0,
                    max_delay_s=self.max_delay_s,
                    **self.report_options,
                )
                acted = enforce(store, report, set_alias=set_alias, notify=alerter.action)
            except TesseraError as e:  # one broken model must not stop guarding the others
                log.warning("experiment guardrails of %s skipped: %s", name, e)
                continue
            out.setdefault(name, []).extend(acted)
            self._stopped = self._stops(store)  # its own stops are announced already
        return out


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
        segments: tuple[SegmentWatch, ...] = (),
        guard: ExperimentGuard | None = None,
    ) -> None:
        self.names, self.lookup, self.predictions = names, lookup, predictions
        self.alerter = alerter or Alerter()
        self.interval_s, self.rows, self.seconds, self.thresholds = (
            interval_s,
            rows,
            seconds,
            thresholds,
        )
        self.segments, self.guard = segments, guard
        self.last_actions: dict[str, list[dict]] = {}
        self.checks = 0
        self.last: dict[str, dict] = {}
        self.last_segments: dict[tuple[str, str], dict] = {}
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
        for sw in self.segments:
            try:
                self.last_segments[(sw.model, sw.segment_col)] = sw.check(self.alerter)
            except TesseraError as e:
                log.warning("segment check of %s skipped: %s", sw.model, e)
        if self.guard is not None:
            try:
                self.last_actions = self.guard.check(self.alerter)
            except TesseraError as e:
                log.warning("experiment guardrails skipped: %s", e)
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
