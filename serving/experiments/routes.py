"""``GET /v1/experiments/{name}``: an APIRouter the scorer app includes with one line.

app.include_router(experiments_router(settings.models_dir, settings.offline_dir))
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException

from features.errors import TesseraError
from serving.experiments.report import experiment_report


def experiments_router(models_dir: Path | str, offline_dir: Path | str) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/experiments/{name}", summary="Arms and shadows vs the champion, with verdicts")
    def report(
        name: str, max_delay_s: float = 7 * 86_400, alpha: float = 0.05, reps: int = 200
    ) -> dict:
        try:
            return experiment_report(
                models_dir, offline_dir, name, max_delay_s=max_delay_s, alpha=alpha, reps=reps
            )
        except TesseraError as e:
            raise HTTPException(status_code=404, detail=str(e)) from e

    return router
