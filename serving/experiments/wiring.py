"""Attach an experiment to the scorer: one router per model name, set in ``scorer.routers``.

The scorer already fetched the feature vector in the champion's feature order; arms and shadows
score that same vector, so every version in a deployment must take the same features (the
registry records each version's feature list; train challengers on the same refs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from features.kafka_admin import create_topics
from features.kafka_config import KafkaSecurity
from serving.experiments.errors import ExperimentError
from serving.experiments.kafka_log import PREDICTIONS_TOPIC, KafkaRecordLog
from serving.experiments.router import ExperimentRouter, _drop
from serving.experiments.shadow_process import ProcessShadowRunner
from serving.experiments.spec import DeploymentStore


def attach_router(
    scorer: Any,
    store: DeploymentStore,
    name: str,
    log: Callable[[Any], object] | None = None,
    shadow_kafka: tuple | None = None,
    **kwargs: Any,
) -> ExperimentRouter:
    """Route ``name``'s requests through its deployment spec (arms, shadows, logging).

    Shadow records go to ``log`` too, unless ``shadow_kafka`` = (bootstrap, topic): then the
    shadow process produces them to Kafka itself (what the scorer does; no GIL time here).
    """
    models = scorer.models
    spec = store.current(name)
    served = tuple(models.get(name).features)
    for v in {spec.champion, *(a.version for a in spec.arms), *spec.shadows}:
        if tuple(models.version(name, v).features) != served:
            raise ExperimentError(
                f"{name} v{v} takes different features than the served v"
                f"{models.get(name).version}; arms and shadows score the served model's vector, "
                "so train them on the same feature refs (same order) or leave them out"
            )

    def predict_one(version: str, x) -> float:
        return models.version(name, version).predictor.predict_one(x)

    # shadows score in a child process that loads them from the registry: in a thread they
    # would share the GIL with requests (two shadows doubled the champion's p99 that way). It is
    # started in the background, not waited for (attaching took ~1 s that way): ready by the
    # time a shadow is deployed to a running scorer, whose first records would otherwise wait
    # for the child's ~1.5 s start
    shadows = ProcessShadowRunner(
        models.registry.storage.uri,
        name,
        log if log is not None else _drop,
        features=kwargs.get("features", "hash"),
        preload=spec.shadows,
        maxsize=kwargs.get("shadow_queue", 2048),
        batch=kwargs.get("shadow_batch", 256),
        kafka=shadow_kafka,
    )
    shadows.start()
    router = ExperimentRouter(
        store,
        name,
        models.predict_fn(name),
        predict_one=predict_one,
        shadows=shadows,
        **({"log": log} if log is not None else {}),
        **kwargs,
    )
    scorer.routers[name] = router
    return router


def attach_deployed(
    scorer: Any, models_dir: Path | str, bootstrap: str | None, topic: str = PREDICTIONS_TOPIC,
    security: KafkaSecurity | None = None,
) -> dict[str, ExperimentRouter]:
    """At scorer start-up: a router for every served model that has a deployment spec.

    Predictions are logged to ``topic`` when a broker is configured (one shared producer);
    without one they are not logged, and the experiment still routes and shadows.
    """
    store = DeploymentStore(models_dir)
    names = [n for n in scorer.models.names if store.revision(n)]
    if not names:
        return {}
    log = None
    if bootstrap:
        create_topics([topic], bootstrap, security=security)
        log = KafkaRecordLog(bootstrap, topic, security=security).log
    kafka = (bootstrap, topic, security) if bootstrap else None
    return {n: attach_router(scorer, store, n, log=log, shadow_kafka=kafka) for n in names}
