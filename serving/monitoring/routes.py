"""``GET /v1/monitor/{name}``: an APIRouter the scorer app includes with one line.

app.include_router(monitor_router(ReferenceFiles(models_dir), PredictionLog(offline_dir).read))
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
from fastapi import APIRouter, HTTPException

from features.errors import TesseraError
from serving.http.errors import error_responses
from serving.monitoring.alerts import Alerter
from serving.monitoring.drift import Thresholds
from serving.monitoring.report import monitor_report
from serving.monitoring.sources import ReferenceLookup, model_window


def run_monitor(
    name: str,
    lookup: ReferenceLookup,
    predictions: Callable[[], pl.DataFrame],
    rows: int | None = 5000,
    seconds: float | None = None,
    thresholds: Thresholds = Thresholds(),
    alerter: Alerter | None = None,
) -> dict:
    """Build the report of model ``name`` over its latest window and let ``alerter`` see it."""
    target = lookup(name)
    window = model_window(predictions(), name, target, rows=rows, seconds=seconds)
    report = monitor_report(name, window, target.reference, thresholds, target.version)
    if alerter is not None:
        alerter.observe(report)
    return report.to_dict()


def monitor_router(
    lookup: ReferenceLookup,
    predictions: Callable[[], pl.DataFrame],
    rows: int | None = 5000,
    seconds: float | None = None,
    thresholds: Thresholds = Thresholds(),
    alerter: Alerter | None = None,
) -> APIRouter:
    router = APIRouter(tags=["monitoring"])
    alerter = alerter or Alerter()

    @router.get("/v1/monitor/{name}", responses=error_responses(404))
    def monitor(name: str) -> dict:
        try:
            return run_monitor(name, lookup, predictions, rows, seconds, thresholds, alerter)
        except TesseraError as e:
            raise HTTPException(status_code=404, detail=str(e)) from e

    return router
