"""The scorer's HTTP API: a thin FastAPI layer over ``Scorer`` and ``OnlineStore``.

The predict and features routes read the body with orjson, check it here (types, shapes and
limits: ``Limits``) and write orjson bytes: pydantic validation of a 20-feature response cost
more than the model itself (the request models below only document the API in the OpenAPI
spec). A small request (at most ``Limits.inline_cells`` entity x feature cells) runs on the
event loop: a call is ~0.1 ms, bounded by the Redis timeout, cheaper than a thread hop. A larger
one runs on the app's one worker thread, so the event loop keeps answering (``/healthz`` stays
fast while a 1000-entity batch is folded) and at most one large request per process works at a
time. A hung Redis costs at most one timeout per thread: the first timeout opens the store's
circuit breaker, and requests then fail at once (503) until the background health check
(``serving.scorer.health``) gets an answer again. ``/healthz`` touches nothing; ``/readyz`` reads
the health check's last result.

Errors: one body, ``{"error": message, "code": code, "field": field-or-null}`` (see
``serving.http.errors`` and ``docs/serving.md``): 400 (bad request), 404 (model not served, no
such route), 413 (body too large), 422 (a read at a past time the tiles cannot answer exactly;
the body adds ``entity``, ``feature``, ``earliest_exact``...), 503 (any Redis failure), 500 only
for a bug.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from features.errors import OnlineStoreError, RegistryError, TesseraError, UnknownFeatureError
from features.online.fold import InexactReadError
from features.online.hmget import store_error
from features.online.read import parse_at
from features.request import MissingRequestField, RequestFeatureError
from serving.auth.guard import AuthGuard
from serving.http import metrics as http_metrics
from serving.http.docs import docs_router
from serving.http.errors import (
    ApiError,
    Guard,
    check_request,
    dumps,
    error_body,
    install,
    read_body,
    send_error,
    send_json,
)
from serving.scorer.health import StoreHealth
from serving.scorer.metrics import ERRORS
from serving.scorer.scorer import BadRequest, Scorer

log = logging.getLogger(__name__)

AT_DOC = ("query time: ISO-8601 (naive = UTC) or epoch milliseconds (default now); a past time "
          "the tiles cannot answer exactly is a 422")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (``docs/serving.md``); beyond it: 400, or 413 for the body."""

    max_entities: int = 1000  # entity rows per request
    max_features: int = 256  # feature refs per /v1/features request
    max_body_bytes: int = 1 << 20  # 1 MiB
    max_at_chars: int = 64
    # entity rows x features a request may have and still run on the event loop
    inline_cells: int = 512


class FeaturesRequest(BaseModel):
    features: list[str] = Field(examples=[["user_spend:amount_sum_1h"]], min_length=1)
    entities: list[dict[str, Any]] = Field(examples=[[{"user_id": "u1"}]], min_length=1)
    at: int | float | str | None = Field(None, description=AT_DOC)


class PredictRequest(BaseModel):
    entities: list[dict[str, Any]] = Field(examples=[[{"user_id": "u1"}]], min_length=1)
    request_features: list[dict[str, float | None]] | None = Field(
        None, description="one object per entity: features computed by the caller (numbers)"
    )
    at: int | float | str | None = Field(None, description=AT_DOC)


class ErrorBody(BaseModel):
    """Every error the scorer answers (some codes add fields, e.g. a 422's ``entity``)."""

    error: str = Field(description="what happened and what to do")
    code: str = Field(description="stable: invalid_json, invalid_field, invalid_at, ...")
    field: str | None = Field(None, description="where in the request, e.g. entities[2].user_id")


Value = float | int | bool | str | None  # a feature value as JSON gives it (null: missing)


class Prediction(BaseModel):
    score: float
    version: str = Field(description="the model version that scored this entity")
    request_id: str = Field(description="server-made; POST /v1/outcomes takes it")
    freshness_s: dict[str, float | None] = Field(
        description="per view: seconds since its newest event (null: no data)")
    arm: str | None = Field(None, description="the experiment arm, when one is deployed")


class PredictResponse(BaseModel):
    model: str
    version: str
    predictions: list[Prediction]


class FeaturesResponse(BaseModel):
    features: list[str]
    values: list[list[Value]] = Field(description="one row per entity, one value per feature")
    missing: list[list[bool]] = Field(description="true where the store had no value")
    freshness_s: list[dict[str, float | None]]


class ReadyResponse(BaseModel):
    ready: bool
    models: dict[str, str] = Field(description="served model -> version")
    problems: list[str] = Field(description="why not ready, each a sentence")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody, "description": d} for s, d in (
        (400, "bad request"), (404, "model not served"), (413, "body too large"),
        (422, "a past read the tiles cannot answer exactly"), (503, "online store unavailable"))
}


class ORJSONResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)



def outcome(endpoint: str, fn: Callable[[], Any], field: str | None = None) -> tuple[int, bytes]:
    """Run ``fn``: (200, its JSON) or its error as (HTTP status, body in the one schema)."""
    try:
        return 200, dumps(fn())
    except Exception as e:  # noqa: BLE001 - failure() answers every error, a bug as a 500
        return failure(endpoint, e, field)


def failure(endpoint: str, e: Exception, field: str | None = None) -> tuple[int, bytes]:
    """Tessera's typed errors as (HTTP status, JSON body); ``field``: where an
    ``UnknownFeatureError`` points (the features route's ``features``)."""
    if isinstance(e, ApiError):
        ERRORS.labels(endpoint, e.code).inc()
        return e.status, dumps(e.body())
    if isinstance(e, InexactReadError):
        ERRORS.labels(endpoint, "inexact_read").inc()
        d = e.to_dict()
        msg = d.pop("error")
        return 422, dumps(error_body("inexact_read", msg, "at", **d))
    if isinstance(e, MissingRequestField):  # features.request: name the absent field
        ERRORS.labels(endpoint, "missing_request_field").inc()
        where = f"request_features[{e.row}].{e.field}" if e.row is not None else e.field
        return 422, dumps(error_body("missing_request_field", str(e), where))
    where = None
    if isinstance(e, RequestFeatureError):  # the view's function raised: its name, no trace
        log.error("%s: %s", endpoint, e)
        ERRORS.labels(endpoint, "request_feature_failed").inc()
        return 500, dumps(error_body("request_feature_failed", str(e), None))
    if isinstance(e, UnknownFeatureError):
        status, code, msg, where = 400, "unknown_feature", str(e), field
    elif isinstance(e, (BadRequest, ValueError)):
        status, code, msg = 400, "bad_request", str(e)
    elif isinstance(e, RegistryError):
        status, code, msg, where = 404, "unknown_model", str(e), "model"
    elif isinstance(e, (OnlineStoreError, redis.RedisError)):
        status, code = 503, "store_unavailable"
        msg = f"online store unavailable, retry later: {store_error(e)}"
    elif isinstance(e, TesseraError):
        log.error("%s: %s", endpoint, e)
        status, code, msg = 500, "internal", str(e)
    else:  # a bug: answer in the schema, log it whole
        log.error("%s: unexpected error", endpoint, exc_info=e)
        status, code = 500, "internal"
        msg = f"internal error ({type(e).__name__}); this is a bug, please report it"
    ERRORS.labels(endpoint, code).inc()
    return status, dumps(error_body(code, msg, where))


def _bad(code: str, message: str, field: str | None) -> ApiError:
    return ApiError(400, code, message, field)


def _is_num(v: Any) -> bool:
    return (type(v) is int or type(v) is float) and math.isfinite(v)


def _load(body: bytes) -> dict[str, Any]:
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise _bad("invalid_json", f"request body is not JSON: {e}", "body") from None
    if not isinstance(req, dict):
        raise _bad("invalid_json", "request body must be a JSON object", "body")
    return req


def _entities(req: dict[str, Any], limits: Limits, example: str) -> list[dict[str, Any]]:
    ents = req.get("entities")
    if not isinstance(ents, list):
        raise _bad("invalid_field",
                   f'body must be an object with "entities": [{example}, ...]', "entities")
    if not ents:
        raise _bad("invalid_field", '"entities" is empty; give at least one entity object',
                   "entities")
    if len(ents) > limits.max_entities:
        raise _bad("too_many_entities", f"{len(ents)} entities in one request; the limit is "
                   f"{limits.max_entities}", "entities")
    for i, e in enumerate(ents):
        if not isinstance(e, dict):
            raise _bad("invalid_field", f"each entity must be an object of key columns, e.g. "
                       f"{example}", f"entities[{i}]")
        for k, v in e.items():
            if not (type(v) is str or _is_num(v)):
                raise _bad("invalid_field", f"entity key {k!r} must be a string or a number, "
                           f"got {type(v).__name__}", f"entities[{i}].{k}")
    return ents


def _keys(ents: list[dict[str, Any]], keys: Sequence[str], what: str) -> None:
    for i, row in enumerate(ents):
        for k in keys:
            if k not in row:
                raise _bad("missing_key", f"entity {row!r} lacks key {k!r}; {what} needs "
                           f"{list(keys)}", f"entities[{i}]")


def _at(req: dict[str, Any], limits: Limits) -> int | None:
    """µs, or None for now."""
    at = req.get("at")
    if at is None:
        return None
    if isinstance(at, str) and len(at) > limits.max_at_chars:
        raise _bad("invalid_at", f"at has {len(at)} characters; send ISO-8601 or epoch ms",
                   "at")
    try:
        return parse_at(at)
    except ValueError as e:
        raise _bad("invalid_at", str(e), "at") from None


def _request_features(req: dict[str, Any], n: int) -> list[dict[str, Any]] | None:
    rf = req.get("request_features")
    if rf is None:
        return None
    if not isinstance(rf, list):
        raise _bad("invalid_field", '"request_features" must be a list of objects, one per '
                   'entity: [{"amount": 12.5}, ...]', "request_features")
    if len(rf) != n:
        raise _bad("invalid_field", f"{len(rf)} request_features rows for {n} entities; give "
                   "one object per entity (or none)", "request_features")
    for i, row in enumerate(rf):
        if not isinstance(row, dict):
            raise _bad("invalid_field", "each request_features row must be an object of "
                       f"name: number, got {type(row).__name__}", f"request_features[{i}]")
        for k, v in row.items():
            if v is not None and not _is_num(v):
                raise _bad("invalid_field", f"request feature {k!r} must be a number or null, "
                           f"got {type(v).__name__}", f"request_features[{i}].{k}")
    return rf


def _features(req: dict[str, Any], limits: Limits) -> list[str]:
    refs = req.get("features")
    if not isinstance(refs, list) or not refs:
        raise _bad("invalid_field", '"features" must be a non-empty list of "view:feature" '
                   "strings", "features")
    if len(refs) > limits.max_features:
        raise _bad("too_many_features", f"{len(refs)} features in one request; the limit is "
                   f"{limits.max_features}", "features")
    for i, r in enumerate(refs):
        if type(r) is not str:
            raise _bad("invalid_field", f'each feature must be a "view:feature" string, got '
                       f"{type(r).__name__}", f"features[{i}]")
    return refs


def with_request_ids(result: dict[str, Any]) -> dict[str, Any]:
    """Every prediction carries a ``request_id``: the experiment router's (the id its prediction
    log keeps, what ``POST /v1/outcomes`` takes), else a fresh one."""
    for p in result.get("predictions", ()):
        if not p.get("request_id"):
            p["request_id"] = uuid.uuid4().hex
    return result


class Handlers:
    """The predict and features routes, framework-free: ``await h.predict(model, body)`` ->
    (status, JSON bytes). The FastAPI routes and ``FastPredict`` both call them."""

    def __init__(self, scorer: Scorer, limits: Limits) -> None:
        self.scorer = scorer
        self.limits = limits
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="tessera-large-request")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def _run(self, endpoint: str, cells: int, fn, field: str | None = None):
        if cells <= self.limits.inline_cells:
            return outcome(endpoint, fn, field)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, outcome, endpoint, fn, field)

    def _prepare_predict(self, model: str, body: bytes):
        req = _load(body)
        ents = _entities(req, self.limits, '{"user_id": "u1"}')
        rf = _request_features(req, len(ents))
        at_us = _at(req, self.limits)
        loaded = self.scorer.models.get(model)
        plan = self.scorer.plan(loaded)
        _keys(ents, plan.entity_keys, model)
        return ents, rf, at_us, len(ents) * max(len(loaded.features), 1)

    async def predict(self, model: str, body: bytes) -> tuple[int, bytes]:
        try:
            ents, rf, at_us, cells = self._prepare_predict(model, body)
        except Exception as e:  # noqa: BLE001 - failure() answers every error
            return failure("predict", e)
        return await self._run("predict", cells, lambda: with_request_ids(self.scorer.predict(
            model, ents, rf, None, at_us=at_us)))

    def _prepare_features(self, body: bytes):
        req = _load(body)
        refs = _features(req, self.limits)
        ents = _entities(req, self.limits, '{"user_id": "u1"}')
        at_us = _at(req, self.limits)
        plan = self.scorer.store.plan(refs)
        _keys(ents, plan.entity_keys, "these features")
        return refs, ents, at_us

    async def features(self, body: bytes) -> tuple[int, bytes]:
        try:
            refs, ents, at_us = self._prepare_features(body)
        except Exception as e:  # noqa: BLE001 - failure() answers every error
            return failure("features", e, "features")

        def run():
            res = self.scorer.store.get_features(refs, ents, None, at_us=at_us)
            return {"features": res.features, "values": res.values, "missing": res.missing,
                    "freshness_s": res.freshness_s}

        return await self._run("features", len(refs) * len(ents), run, "features")


class FastPredict:
    """ASGI wrapper answering ``POST /v1/predict/{model}`` before FastAPI's routing.

    Same handler as the FastAPI route (which stays for the OpenAPI spec and for anyone mounting
    the bare app); skipping routing, dependency solving and Request/Response objects saves
    ~0.1 ms of a ~0.4 ms request (bench/serve.py). Everything else goes to FastAPI.
    """

    PREFIX = "/v1/predict/"

    def __init__(self, app: FastAPI, handlers: Handlers, auth: AuthGuard | None = None) -> None:
        self.app = app
        self.handlers = handlers
        self.auth = auth

    ROUTE = "/v1/predict/{model}"

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        name = path[len(self.PREFIX):]
        if self.auth is not None and scope["type"] == "http":
            refused = self.auth.check(scope)
            if refused is not None:
                started = time.perf_counter()
                await send_error(send, refused)
                http_metrics.observe("refused", scope["method"], refused.status, started)
                return
        if (scope["type"] != "http" or scope["method"] != "POST"
                or not path.startswith(self.PREFIX) or "/" in name or name in ("", ".", "..")):
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            await self._counted(scope, receive, send)
            return
        started = time.perf_counter()
        status = await self._predict(name, scope, receive, send)
        http_metrics.observe(self.ROUTE, "POST", status, started)

    async def _counted(self, scope, receive, send) -> None:
        """Any other route through FastAPI, counted by its route template and status."""
        started = time.perf_counter()
        seen = {"status": 500}

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            http_metrics.observe(http_metrics.route_of(scope), scope["method"], seen["status"],
                                 started)

    async def _predict(self, name: str, scope, receive, send) -> int:
        limits = self.handlers.limits
        problem = check_request(scope, limits.max_body_bytes)
        if problem is None:
            try:
                body = await read_body(receive, limits.max_body_bytes)
            except ApiError as e:
                problem = e
        if problem is not None:
            ERRORS.labels("predict", problem.code).inc()
            await send_error(send, problem)
            return problem.status
        status, out = await self.handlers.predict(name, body)
        await send_json(send, status, out)
        return status


def create_app(
    scorer: Scorer,
    max_entities: int = 1000,
    title: str = "Tessera scorer",
    routers: Sequence[APIRouter] = (),
    limits: Limits | None = None,
) -> FastAPI:
    """The FastAPI app (every route, OpenAPI), plus ``routers`` (monitoring, dashboard, ...).
    ``limits`` (default ``Limits(max_entities=max_entities)``) bound every request.

    Serve ``fast_app(app)`` for the framework-free predict path."""
    limits = limits or Limits(max_entities=max_entities)
    health = StoreHealth(scorer.store)
    handlers = Handlers(scorer, limits)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        health.start()
        yield
        health.stop()
        handlers.close()
        scorer.models.close()

    app = FastAPI(
        title=title, version="1", default_response_class=ORJSONResponse, lifespan=lifespan,
        docs_url=None, redoc_url=None,  # /docs from vendored files below; ReDoc needs a CDN
    )
    app.include_router(docs_router(title=title))
    app.state.scorer = scorer
    app.state.health = health
    app.state.handlers = handlers
    app.state.limits = limits
    install(app)
    app.add_middleware(Guard, max_body_bytes=limits.max_body_bytes)

    async def body_of(request: Request) -> bytes:
        return await read_body(request.receive, limits.max_body_bytes)

    def json_body(schema: type[BaseModel]) -> dict[str, Any]:
        return {"requestBody": {"required": True, "content": {"application/json": {
            "schema": schema.model_json_schema()}}}}

    @app.post(
        "/v1/predict/{model}", openapi_extra=json_body(PredictRequest), tags=["scoring"],
        responses={200: {"model": PredictResponse, "description": "one score per entity"},
                   **ERROR_RESPONSES},
        summary="Score one or many entities with the model's served (champion) version",
    )
    async def predict(model: str, request: Request) -> Response:
        status, body = await handlers.predict(model, await body_of(request))
        return Response(body, status_code=status, media_type="application/json")

    @app.post("/v1/features", openapi_extra=json_body(FeaturesRequest), tags=["features"],
              responses={200: {"model": FeaturesResponse, "description": "the values"},
                         **ERROR_RESPONSES},
              summary="Online feature values for a batch of entities")
    async def features(request: Request) -> Response:
        status, body = await handlers.features(await body_of(request))
        return Response(body, status_code=status, media_type="application/json")

    @app.get("/healthz", tags=["operations"], summary="The process is up (touches nothing else)")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={
                 200: {"model": ReadyResponse, "description": "ready"},
                 503: {"model": ReadyResponse, "description": "not ready, and why"}},
             summary="The online store can serve and every served model is loaded "
             "(from a background check: never waits on Redis)")
    async def readyz() -> Response:
        problems = health.problems()
        if not scorer.models.names:
            problems.append("no model loaded")
        for name in scorer.models.names:  # features the repo cannot serve fail every predict
            try:
                scorer.plan(scorer.models.get(name))
            except TesseraError as e:
                problems.append(f"{name}: {e}")
        body = {"ready": not problems, "models": {
            n: scorer.models.get(n).version for n in scorer.models.names}, "problems": problems}
        return ORJSONResponse(body, status_code=200 if not problems else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics() -> Response:
        registry = REGISTRY
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)

    return app


def fast_app(app: FastAPI, auth: AuthGuard | None = None) -> FastPredict:
    """``app`` behind the framework-free predict path and the token check (``auth``): what
    ``tessera serve`` runs."""
    return FastPredict(app, app.state.handlers, auth)
