"""Alerts: a JSON log line, Prometheus metrics and, optionally, a webhook POST.

Drift alerts come from ``observe`` (a ``MonitorReport``), segment alerts (a segment of a
labelled log worse than its baseline while the total held, ``serving.experiments.segments``)
from ``observe_segments``. An alert fires when a ``(model, column, kind)`` check turns on and
again (as ``resolved``) when it turns off, not on every report: a monitor polled every few
seconds would otherwise flood the log and the webhook. The gauges (PSI, KS p-value, null rate
per column) are updated on every report so a Prometheus rule can alert on its own terms. A
failing webhook is logged and counted, never raised: alerting must not break monitoring.
"""

from __future__ import annotations

import logging
import time

import httpx
import orjson
from prometheus_client import Counter, Gauge

from serving.monitoring.report import MonitorReport

log = logging.getLogger("tessera.monitor")

ALERTS = Counter("tessera_monitor_alerts", "Monitor alerts raised", ["model", "column", "kind"])
# gauges of the last monitor run: under `serve --workers N` one series each (the most recent
# write wins), not one per worker process with a pid label
ACTIVE = Gauge(
    "tessera_monitor_alert_active", "1 while a monitor alert is on", ["model", "column", "kind"],
    multiprocess_mode="mostrecent",
)
PSI = Gauge("tessera_monitor_psi", "PSI of the last window vs reference", ["model", "column"],
            multiprocess_mode="mostrecent")
KS_P = Gauge("tessera_monitor_ks_pvalue", "KS p-value of the last window", ["model", "column"],
             multiprocess_mode="mostrecent")
NULLS = Gauge("tessera_monitor_null_ratio", "Share of null values in the last window",
              ["model", "column"], multiprocess_mode="mostrecent")
ACTIONS = Counter(
    "tessera_experiment_actions",
    "Automatic experiment actions (arm stopped, shadow retired, champion rolled back)",
    ["model", "action"],
)
WEBHOOK_FAILURES = Counter("tessera_monitor_webhook_failures", "Webhook POSTs that failed")


class Alerter:
    """Turns successive reports into alert events; one per model monitor process."""

    def __init__(self, webhook_url: str | None = None, timeout_s: float = 2.0) -> None:
        self.webhook_url = webhook_url
        self.timeout_s = timeout_s
        self._active: set[tuple[str, str, str]] = set()
        self._segments: dict[tuple[str, str], set[tuple[str, str, str]]] = {}

    def observe(self, report: MonitorReport) -> list[dict]:
        """Update metrics from ``report``; log, count and POST what changed. Returns the events."""
        m = report.model
        for c in report.columns:
            for gauge, value in ((PSI, c.psi), (KS_P, c.ks_p), (NULLS, c.null_rate)):
                gauge.labels(m, c.name).set(float("nan") if value is None else value)
        now = {(m, col, kind) for col, kind in report.alerts}
        by_name = {c.name: c for c in report.columns}
        events = []
        for key in sorted(now - self._active):
            ALERTS.labels(*key).inc()
            ACTIVE.labels(*key).set(1)
            events.append(self._event("raised", key, report, by_name[key[1]]))
        for key in sorted(self._active - now):
            ACTIVE.labels(*key).set(0)
            events.append(self._event("resolved", key, report, by_name.get(key[1])))
        self._active = now
        for e in events:
            log.warning(orjson.dumps(e).decode())
        if events and self.webhook_url:
            self._post(events)
        return events

    def action(self, event: dict) -> dict:
        """Announce an automatic experiment action (``serving.experiments.autostop``): every
        action is an alert of its own, logged, counted and POSTed."""
        event = {**event, "at_us": event.get("at_us") or time.time_ns() // 1000}
        ACTIONS.labels(event.get("model", ""), event.get("action", "")).inc()
        log.warning(orjson.dumps(event).decode())
        if self.webhook_url:
            self._post([event])
        return event

    def observe_segments(
        self, model: str, version: str | None, segment_col: str, alerts: list, rows: int
    ) -> list[dict]:
        """Raise / resolve ``segment_degraded`` alerts (``SegmentAlert``s of one check of
        ``segment_col``): a segment worse than its baseline while the model's total held."""
        now = {(model, a.column, f"segment_{a.metric}") for a in alerts}
        by_key = {(model, a.column, f"segment_{a.metric}"): a for a in alerts}
        before = self._segments.get((model, segment_col), set())
        events = []
        for key in sorted(now - before):
            ALERTS.labels(*key).inc()
            ACTIVE.labels(*key).set(1)
            events.append(self._segment_event("raised", key, version, rows, by_key[key]))
        for key in sorted(before - now):
            ACTIVE.labels(*key).set(0)
            events.append(self._segment_event("resolved", key, version, rows, None))
        self._segments[(model, segment_col)] = now
        for e in events:
            log.warning(orjson.dumps(e).decode())
        if events and self.webhook_url:
            self._post(events)
        return events

    @staticmethod
    def _segment_event(state: str, key, version, rows: int, alert) -> dict:
        model, column, kind = key
        return {
            "event": "tessera.monitor.alert",
            "state": state,
            "model": model,
            "version": version,
            "column": column,
            "kind": kind,
            "rows": rows,
            "at_us": time.time_ns() // 1000,
            **({} if alert is None else alert.to_dict()),
        }

    @staticmethod
    def _event(state: str, key: tuple[str, str, str], report: MonitorReport, col) -> dict:
        model, column, kind = key
        stats = {}
        if col is not None:
            d = col.to_dict()
            stats = {k: d[k] for k in ("psi", "ks", "ks_p", "null_rate", "out_of_range_rate")}
        return {
            "event": "tessera.monitor.alert",
            "state": state,
            "model": model,
            "version": report.version,
            "column": column,
            "kind": kind,
            "rows": report.rows,
            "window_end_us": report.window_end_us,
            "at_us": time.time_ns() // 1000,
            **stats,
        }

    def _post(self, events: list[dict]) -> None:
        try:
            r = httpx.post(self.webhook_url, json={"alerts": events}, timeout=self.timeout_s)
            r.raise_for_status()
        except httpx.HTTPError as e:
            WEBHOOK_FAILURES.inc()
            log.error(
                orjson.dumps(
                    {
                        "event": "tessera.monitor.webhook_failed",
                        "url": self.webhook_url,
                        "error": repr(e),
                    }
                ).decode()
            )
