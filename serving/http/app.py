"""The scorer's HTTP API: a thin FastAPI layer over ``Scorer`` and ``OnlineStore``.

The predict route reads the body with orjson and writes orjson bytes: pydantic validation of a
20-feature response cost more than the model itself (the request models below only document
the API in the OpenAPI spec). Handlers are ``async`` and call Redis synchronously: a call is
~0.1 ms, bounded by the configured Redis timeout, which is cheaper than a thread-pool hop;
throughput comes from worker processes (``tessera serve --workers N``). A hung Redis costs at
most one timeout per worker: the first timeout opens the store's circuit breaker, and requests
then fail at once (503) until the background health check (``serving.scorer.health``) gets an
answer again. ``/healthz`` touches nothing; ``/readyz`` reads the health check's last result.

Errors: ``{"error": message}`` with 400 (bad request), 404 (model not served), 422 (a read at
a past time the tiles cannot answer exactly; the body adds ``entity``, ``feature``,
``earliest_exact``...), 503 (any Redis failure), 500 only for a bug.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import asynccontextmanager
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
from serving.scorer.health import StoreHealth
from serving.scorer.metrics import ERRORS
from serving.scorer.scorer import BadRequest, Scorer

AT_DOC = ("query time: ISO-8601 (naive = UTC) or epoch milliseconds (default now); a past time "
          "the tiles cannot answer exactly is a 422")


class FeaturesRequest(BaseModel):
    features: list[str] = Field(examples=[["user_spend:amount_sum_1h"]])
    entities: list[dict[str, Any]] = Field(examples=[[{"user_id": "u1"}]])
    at: int | float | str | None = Field(None, description=AT_DOC)


class PredictRequest(BaseModel):
    entities: list[dict[str, Any]] = Field(examples=[[{"user_id": "u1"}]])
    request_features: list[dict[str, Any]] | None = Field(
        None, description="one object per entity: features computed by the caller"
    )
    at: int | float | str | None = Field(None, description=AT_DOC)


class ORJSONResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _dumps(content)


def _dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def outcome(endpoint: str, fn) -> tuple[int, bytes]:
    """Run ``fn`` and map Tessera's typed errors to (HTTP status, JSON body)."""
    try:
        return 200, _dumps(fn())
    except InexactReadError as e:
        ERRORS.labels(endpoint, "inexact_read").inc()
        return 422, _dumps(e.to_dict())
    except (BadRequest, UnknownFeatureError, ValueError) as e:
        status, cause, msg = 400, "bad_request", str(e)
    except RegistryError as e:
        status, cause, msg = 404, "unknown_model", str(e)
    except (OnlineStoreError, redis.RedisError) as e:
        msg = f"online store unavailable, retry later: {store_error(e)}"
        status, cause = 503, "redis"
    except TesseraError as e:
        status, cause, msg = 500, "internal", str(e)
    ERRORS.labels(endpoint, cause).inc()
    return status, _dumps({"error": msg})


def _parse(body: bytes, max_entities: int) -> dict[str, Any]:
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"request body is not JSON: {e}") from None
    if not isinstance(req, dict) or not isinstance(req.get("entities"), list):
        raise BadRequest('body must be an object with "entities": [{"user_id": "u1"}, ...]')
    ents = req["entities"]
    if not ents:
        raise BadRequest('"entities" is empty; give at least one entity object')
    if len(ents) > max_entities:
        raise BadRequest(f"{len(ents)} entities in one request; the limit is {max_entities}")
    if not all(isinstance(e, dict) for e in ents):
        raise BadRequest('each entity must be an object of key columns, e.g. {"user_id": "u1"}')
    return req


def predict_handler(scorer: Scorer, max_entities: int):
    """``(model, body bytes) -> (status, JSON bytes)``: the whole predict route, framework-free."""

    def handle(model: str, body: bytes) -> tuple[int, bytes]:
        def run():
            req = _parse(body, max_entities)
            return scorer.predict(model, req["entities"], req.get("request_features"),
                                  req.get("at"))

        return outcome("predict", run)

    return handle


class FastPredict:
    """ASGI wrapper answering ``POST /v1/predict/{model}`` before FastAPI's routing.

    Same handler as the FastAPI route (which stays for the OpenAPI spec and for anyone mounting
    the bare app); skipping routing, dependency solving and Request/Response objects saves
    ~0.1 ms of a ~0.4 ms request (bench/serve.py). Everything else goes to FastAPI.
    """

    PREFIX = "/v1/predict/"

    def __init__(self, app: FastAPI, handle) -> None:
        self.app = app
        self.handle = handle

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or scope["method"] != "POST"
                or not path.startswith(self.PREFIX) or "/" in path[len(self.PREFIX):]):
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        status, body = self.handle(path[len(self.PREFIX):], b"".join(chunks))
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]})
        await send({"type": "http.response.body", "body": body})


def create_app(
    scorer: Scorer,
    max_entities: int = 1000,
    title: str = "Tessera scorer",
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The FastAPI app (every route, OpenAPI), plus ``routers`` (monitoring, dashboard, ...).

    Serve ``fast_app(app)`` for the framework-free predict path."""
    health = StoreHealth(scorer.store)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        health.start()
        yield
        health.stop()
        scorer.models.close()

    app = FastAPI(
        title=title, version="1", default_response_class=ORJSONResponse, lifespan=lifespan
    )
    app.state.scorer = scorer
    app.state.health = health
    handle = app.state.predict_handler = predict_handler(scorer, max_entities)

    def guard(endpoint: str, fn) -> Response:
        status, body = outcome(endpoint, fn)
        return Response(body, status_code=status, media_type="application/json")

    @app.post(
        "/v1/predict/{model}",
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": PredictRequest.model_json_schema()}}}},
        summary="Score one or many entities with the model's served (champion) version",
    )
    async def predict(model: str, request: Request) -> Response:
        status, body = handle(model, await request.body())
        return Response(body, status_code=status, media_type="application/json")

    @app.post("/v1/features", summary="Online feature values for a batch of entities")
    async def features(req: FeaturesRequest) -> Response:
        def run():
            if len(req.entities) > max_entities:
                raise BadRequest(
                    f"{len(req.entities)} entities in one request; the limit is {max_entities}"
                )
            res = scorer.store.get_features(req.features, req.entities, req.at)
            return {"features": res.features, "values": res.values, "missing": res.missing,
                    "freshness_s": res.freshness_s}

        return guard("features", run)

    @app.get("/healthz", summary="The process is up (touches nothing else)")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="The online store can serve and every served model is loaded "
             "(from a background check: never waits on Redis)")
    async def readyz() -> Response:
        problems = health.problems()
        if not scorer.models.names:
            problems.append("no model loaded")
        body = {"ready": not problems, "models": {
            n: scorer.models.get(n).version for n in scorer.models.names}, "problems": problems}
        return ORJSONResponse(body, status_code=200 if not problems else 503)

    @app.get("/metrics", summary="Prometheus metrics")
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


def fast_app(app: FastAPI) -> FastPredict:
    """``app`` behind the framework-free predict path: what ``tessera serve`` runs."""
    return FastPredict(app, app.state.predict_handler)
