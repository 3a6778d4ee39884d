"""The predict path: features (one Redis round trip) -> vector in the model's order -> score.

``Scorer.predict`` is the one function the HTTP layer calls. Extension points for experiments:

- ``routers[name]``: an object with ``score(entity_key, x, request_id=None)`` returning something
  with ``.score`` and ``.version`` (``serving.experiments.router.ExperimentRouter`` fits). When
  set, every entity of ``name`` is scored through it: it chooses the arm, hands the vector to
  shadow models off the critical path and logs the prediction. Build one with
  ``ExperimentRouter(store, name, scorer.models.predict_fn(name), log=...)``.
- ``ModelSet.predict_fn(name)``: ``(version, X) -> scores`` for any registered version.

Missing values: a feature whose ring is absent (entity never seen or expired) is counted in
``tessera_feature_missing_total`` and takes its empty-window value -- 0 for count/sum, NaN for
the others -- which is what the training-set builder gives an entity with no events, so the
model sees the same thing online as in training. Request-time features absent from the request
are NaN and counted the same way.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from features.definitions import FeatureRepo, FeatureView, parse_ref
from features.errors import TesseraError, UnknownFeatureError
from features.online.read import At, OnlineStore
from serving.scorer.metrics import ModelMetrics
from serving.scorer.models import LoadedModel, ModelSet

NAN = math.nan
log = logging.getLogger(__name__)


class Router(Protocol):
    def score(self, entity_key: str, x: np.ndarray, request_id: str | None = None) -> Any: ...


class BadRequest(TesseraError):
    """The request names unknown features or entities without their keys (a 4xx)."""


@dataclass
class _Plan:
    """How to build one model version's vectors; built once per served version."""

    model: LoadedModel
    online_refs: list[str]
    online_cols: list[int]
    request_names: list[str]
    request_cols: list[int]
    entity_keys: tuple[str, ...]
    metrics: ModelMetrics
    views: list[str] = field(default_factory=list)


def _is_online(repo: FeatureRepo, ref: str) -> bool:
    view, _, _ = ref.partition(":")
    return ":" in ref and isinstance(repo.views.get(view), FeatureView)


class Scorer:
    def __init__(self, store: OnlineStore, models: ModelSet) -> None:
        self.store = store
        self.models = models
        self.routers: dict[str, Router] = {}
        self._plans: dict[tuple[str, str], _Plan] = {}

    def plan(self, model: LoadedModel) -> _Plan:
        key = (model.name, model.version)
        p = self._plans.get(key)
        if p is None:
            p = self._plans[key] = self._build_plan(model)
        return p

    def _build_plan(self, m: LoadedModel) -> _Plan:
        repo = self.store.repo
        for view, trained in (m.metadata.get("feature_views") or {}).items():
            now = repo.views.get(view)
            if now is not None and now.version != trained:
                log.warning(
                    "%s v%s was trained on %s version %s but the feature repo now defines "
                    "version %s: it is served the new definition's values; retrain it",
                    m.name, m.version, view, trained, now.version,
                )
        online = [(j, r) for j, r in enumerate(m.features) if _is_online(repo, r)]
        request = [(j, r) for j, r in enumerate(m.features) if not _is_online(repo, r)]
        keys: tuple[str, ...] = ()
        if online:
            rp = self.store.plan([r for _, r in online])  # validates the refs once
            if len(rp.by_entity) > 1:
                raise UnknownFeatureError(
                    f"{m.name} v{m.version} mixes entities {list(rp.by_entity)}; one entity per "
                    "model is supported"
                )
            keys = next(iter(rp.by_entity.values())).entity.keys
        for _, r in request:
            if ":" in r:
                parse_ref(r)
                raise UnknownFeatureError(
                    f"{m.name} v{m.version} needs {r!r}, which is not an online windowed feature "
                    "of the feature repo; pass it as a request-time feature or fix the repo"
                )
        return _Plan(
            m,
            [r for _, r in online],
            [j for j, _ in online],
            [r for _, r in request],
            [j for j, _ in request],
            keys,
            ModelMetrics(m.name, m.version, m.features),
        )

    def vectors(
        self,
        plan: _Plan,
        entities: list[dict[str, Any]],
        request_features: list[dict[str, Any]] | None = None,
        at: At = None,
        at_us: int | None = None,
    ) -> tuple[np.ndarray, list[dict[str, float | None]]]:
        """Feature matrix (rows = entities, columns = the model's order) and freshness."""
        n, width = len(entities), len(plan.model.features)
        missing = plan.metrics.missing
        if not plan.online_refs:
            x = np.full((n, width), NAN)
            fresh: list[dict[str, float | None]] = [{} for _ in entities]
        else:
            for row in entities:
                for k in plan.entity_keys:
                    if k not in row:
                        raise BadRequest(
                            f"entity {row!r} lacks key {k!r}; {plan.model.name} needs "
                            f"{list(plan.entity_keys)}"
                        )
            res = self.store.get_features(plan.online_refs, entities, at, at_us=at_us)
            fresh = res.freshness_s
            cols = plan.online_cols
            rows = [[NAN if v is None else v for v in vals] for vals in res.values]
            if plan.request_names:
                x = np.full((n, width), NAN)
                x[:, cols] = rows
            else:  # the model takes only online features, in the store's order
                x = np.array(rows, dtype=np.float64)
            for miss in res.missing:
                if True in miss:
                    for c, mflag in zip(cols, miss, strict=True):
                        if mflag:
                            missing[c].inc()
        if plan.request_names:
            for i in range(n):
                given = request_features[i] if request_features else {}
                for c, name in zip(plan.request_cols, plan.request_names, strict=True):
                    v = given.get(name)
                    if v is None:
                        missing[c].inc()
                    else:
                        x[i, c] = float(v)
        return x, fresh

    def entity_key(self, plan: _Plan, row: dict[str, Any]) -> str:
        if plan.entity_keys:
            return "|".join(str(row[k]) for k in plan.entity_keys)
        return "|".join(f"{k}={v}" for k, v in sorted(row.items()))

    def predict(
        self,
        name: str,
        entities: list[dict[str, Any]],
        request_features: list[dict[str, Any]] | None = None,
        at: At = None,
        *,
        at_us: int | None = None,
    ) -> dict[str, Any]:
        """Score ``entities`` with the served version of ``name`` (or its experiment router)
        at ``at`` (ISO-8601, epoch ms or datetime; ``features.online.read.parse_at``) or
        ``at_us`` (exact µs); default now."""
        t0 = time.perf_counter()
        model = self.models.get(name)
        plan = self.plan(model)
        if request_features is not None and len(request_features) != len(entities):
            raise BadRequest(
                f"{len(request_features)} request_features rows for {len(entities)} entities; "
                "give one object per entity (or none)"
            )
        x, fresh = self.vectors(plan, entities, request_features, at, at_us)
        router = self.routers.get(name)
        if router is not None:
            preds = []
            for i, row in enumerate(entities):
                served = router.score(self.entity_key(plan, row), x[i])
                preds.append({"score": served.score, "version": served.version,
                              "arm": getattr(served, "arm", None), "freshness_s": fresh[i],
                              "request_id": getattr(served, "request_id", None)})
        else:
            scores = (
                [model.predictor.predict_one(x[0])] if len(entities) == 1
                else model.predictor.predict(x).tolist()
            )
            preds = [{"score": s, "version": model.version, "freshness_s": f}
                     for s, f in zip(scores, fresh, strict=True)]
        plan.metrics.predictions.inc(len(entities))
        plan.metrics.latency.observe(time.perf_counter() - t0)
        return {"model": name, "version": model.version, "predictions": preds}
