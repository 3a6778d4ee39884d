"""The predict path: features (one Redis round trip) -> vector in the model's order -> score.

A model's inputs are of three kinds, all named as in its training set: stored features
(windowed views' rings and materialized batch views' rows, fetched together from the entity's
hash), request feature views (``features.request``: computed here from the request's
``request_features`` and the stored inputs fetched in the same round trip, with the function
``training_set()`` uses) and plain request-time values (any other name, taken from
``request_features`` as they are).

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

from features.definitions import BatchFeatureView, FeatureRepo, parse_ref
from features.errors import TesseraError, UnknownFeatureError
from features.online.read import At, OnlineStore
from features.request import MissingRequestField, RequestFeatureView
from serving.scorer.metrics import ModelMetrics
from serving.scorer.models import LoadedModel, ModelSet

NAN = math.nan
log = logging.getLogger(__name__)


class Router(Protocol):
    def score(self, entity_key: str, x: np.ndarray, request_id: str | None = None) -> Any: ...


class BadRequest(TesseraError):
    """The request names unknown features or entities without their keys (a 4xx)."""


@dataclass
class _Computed:
    """One request feature view a model uses: its function's arguments (stored inputs by
    position in the fetched row, request fields by name) and where its outputs go."""

    view: RequestFeatureView
    inputs: list[tuple[str, int]]
    fields: list[str]
    outputs: list[tuple[str, int]]


@dataclass
class _Plan:
    """How to build one model version's vectors; built once per served version."""

    model: LoadedModel
    online_refs: list[str]  # stored features of the model (windowed or materialized batch)
    online_cols: list[int]
    request_names: list[str]  # plain request-time values, passed through
    request_cols: list[int]
    entity_keys: tuple[str, ...]
    metrics: ModelMetrics
    views: list[str] = field(default_factory=list)
    input_refs: list[str] = field(default_factory=list)  # read only by request feature views
    computed: list[_Computed] = field(default_factory=list)

    @property
    def fetch_refs(self) -> list[str]:
        """What one online read fetches: the model's stored features, then the inputs."""
        return self.online_refs + self.input_refs


_NUMERIC = ("int", "float", "bool")


def _is_online(repo: FeatureRepo, ref: str) -> bool:
    """A stored feature served from the online store: a windowed view's, or a batch view's
    (``tessera materialize`` writes those into the same hashes)."""
    view, _, feat = ref.partition(":")
    v = repo.views.get(view)
    if isinstance(v, BatchFeatureView) and v.schema.get(feat) not in _NUMERIC:
        raise UnknownFeatureError(f"{ref} is a {v.schema.get(feat)} column; a model's features "
                                  "are numbers")
    return ":" in ref and v is not None


def _is_computed(repo: FeatureRepo, ref: str) -> bool:
    view, sep, _ = ref.partition(":")
    return bool(sep) and view in repo.requests


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
            now = repo.views.get(view) or repo.requests.get(view)
            if now is not None and now.version != trained:
                log.warning(
                    "%s v%s was trained on %s version %s but the feature repo now defines "
                    "version %s: it is served the new definition's values; retrain it",
                    m.name, m.version, view, trained, now.version,
                )
        online = [(j, r) for j, r in enumerate(m.features) if _is_online(repo, r)]
        computed = [(j, r) for j, r in enumerate(m.features) if _is_computed(repo, r)]
        request = [(j, r) for j, r in enumerate(m.features)
                   if not _is_online(repo, r) and not _is_computed(repo, r)]
        fetch = [r for _, r in online]
        plans: dict[str, _Computed] = {}
        for j, r in computed:
            vname, fname = parse_ref(r)
            rv = repo.requests[vname]
            if fname not in rv.features:
                raise UnknownFeatureError(f"{m.name} v{m.version} needs {r!r}; request feature "
                                          f"view {vname!r} has {', '.join(rv.features)}")
            c = plans.get(vname)
            if c is None:
                fetch += [i for i in rv.inputs.values() if i not in fetch]
                c = plans[vname] = _Computed(
                    rv, [(a, fetch.index(i)) for a, i in rv.inputs.items()], list(rv.request), [])
            c.outputs.append((fname, j))
        keys: tuple[str, ...] = ()
        if fetch:
            rp = self.store.plan(fetch)  # validates the refs once
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
                    f"{m.name} v{m.version} needs {r!r}, which is not a feature of the feature "
                    "repo (windowed, batch or request feature view; request feature views are "
                    "code, found only in a repo module: serve with --repo); pass it as a "
                    "request-time value or fix the repo"
                )
        return _Plan(
            m,
            [r for _, r in online],
            [j for j, _ in online],
            [r for _, r in request],
            [j for j, _ in request],
            keys,
            ModelMetrics(m.name, m.version, m.features),
            input_refs=fetch[len(online):],
            computed=list(plans.values()),
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
        fetched = None
        if not plan.online_refs and not plan.input_refs:
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
            res = self.store.get_features(plan.fetch_refs, entities, at, at_us=at_us)
            fresh = res.freshness_s
            cols = plan.online_cols
            rows = [[NAN if v is None else v for v in vals] for vals in res.values]
            if plan.computed:
                fetched = np.array(rows, dtype=np.float64)
                k = len(cols)
                if plan.request_names:
                    x = np.full((n, width), NAN)
                else:  # every column is a stored or a computed feature: all written below
                    x = np.empty((n, width))
                if cols == list(range(k)):  # stored features first: a slice, not a gather
                    x[:, :k] = fetched[:, :k]
                else:
                    x[:, cols] = fetched[:, :k]
            elif plan.request_names:
                x = np.full((n, width), NAN)
                x[:, cols] = rows
            else:  # the model takes only online features, in the store's order
                x = np.array(rows, dtype=np.float64)
            for miss in res.missing:
                if True in miss:
                    for c, mflag in zip(cols, miss, strict=False):  # inputs come after
                        if mflag:
                            missing[c].inc()
        for c in plan.computed:
            self._compute(c, x, fetched, request_features, n)
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

    @staticmethod
    def _compute(c: _Computed, x: np.ndarray, fetched: np.ndarray | None,
                 request_features: list[dict[str, Any]] | None, n: int) -> None:
        """One request feature view's outputs into ``x``: its function over the fetched
        inputs and the request's fields (``MissingRequestField`` when one is absent)."""
        cols: dict[str, np.ndarray] = {}
        for arg, j in c.inputs:
            cols[arg] = fetched[:, j]  # type: ignore[index]
        for name in c.fields:
            vals = []
            for i in range(n):
                row = request_features[i] if request_features else {}
                if name not in row:
                    raise MissingRequestField(c.view.name, name, i)
                v = row[name]
                vals.append(NAN if v is None else v)
            cols[name] = np.array(vals, dtype=np.float64)
        out = c.view.compute(cols, n)
        for fname, j in c.outputs:
            x[:, j] = out[fname]

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
