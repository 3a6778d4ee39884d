"""Attach an experiment to the scorer: one router per model name, set in ``scorer.routers``.

The scorer already fetched the feature vector in the champion's feature order; arms and shadows
score that same vector, so every version in a deployment must take the same features (the
registry records each version's feature list; train challengers on the same refs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from serving.experiments.router import ExperimentRouter
from serving.experiments.spec import DeploymentStore


def attach_router(
    scorer: Any,
    store: DeploymentStore,
    name: str,
    log: Callable[[Any], object] | None = None,
    **kwargs: Any,
) -> ExperimentRouter:
    """Route ``name``'s requests through its deployment spec (arms, shadows, logging)."""
    models = scorer.models

    def predict_one(version: str, x) -> float:
        return models.version(name, version).predictor.predict_one(x)

    router = ExperimentRouter(
        store,
        name,
        models.predict_fn(name),
        predict_one=predict_one,
        **({"log": log} if log is not None else {}),
        **kwargs,
    )
    scorer.routers[name] = router
    return router
