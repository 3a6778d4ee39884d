"""``GET /v1/experiments/{name}``: an APIRouter the scorer app includes with one line.

app.include_router(experiments_router(settings.models_location, settings.offline_location))
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Query

from features.errors import TesseraError
from serving.experiments.report import experiment_report
from serving.experiments.report_cache import ReportCache
from serving.http.errors import error_responses

# bootstrap resamples one request may ask for: 0.28 s for 20k logged predictions, growing with
# the log (issue 16: 30k reps kept a core busy ~40 s)
MAX_REPS = 1000


def experiments_router(models_dir: Path | str, offline_dir: Path | str) -> APIRouter:
    router = APIRouter(tags=["experiments"])
    cache = ReportCache(models_dir, offline_dir)
    router.report_cache = cache  # type: ignore[attr-defined]  # for tests and operators

    @router.get(
        "/v1/experiments/{name}", responses=error_responses(404),
        summary="Arms and shadows vs the champion: anytime-valid decisions and fixed-horizon tests",
    )
    def report(
        name: str,
        max_delay_s: float = Query(7 * 86_400, ge=0, le=10 * 365 * 86_400),
        alpha: float = Query(0.05, gt=0, lt=1),
        reps: int = Query(200, ge=0, le=MAX_REPS, description="bootstrap resamples (0: no CIs)"),
        t_star: float = Query(
            5000, gt=0, le=1e9, description="labels at which the confidence sequence is tightest"
        ),
        min_labels: int = Query(
            100, ge=10, le=10**9, description="labels (per side for arms) before any decision"
        ),
        decide_on: str = Query(
            "logloss", pattern="^(logloss|business)$", description="arms: metric that decides"
        ),
    ) -> dict:
        params = {"max_delay_s": max_delay_s, "alpha": alpha, "reps": reps, "t_star": t_star,
                  "min_labels": min_labels, "decide_on": decide_on}
        try:
            return cache.get(name, params, lambda: experiment_report(
                models_dir, offline_dir, name, **params))
        except TesseraError as e:
            raise HTTPException(status_code=404, detail=str(e)) from e

    return router
