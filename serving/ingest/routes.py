"""The push route, for the scorer app (``serving.http.main.build_app`` includes it)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from features.definitions import FeatureRepo
from features.kafka_config import KafkaSecurity
from serving.http.errors import read_body
from serving.ingest.push import PushService


class Rejection(BaseModel):
    index: int = Field(description="position of the event in the request's list")
    field: str | None = Field(description="the schema field at fault (null: the whole event)")
    reason: str


class PushResponse(BaseModel):
    source: str
    accepted: int = Field(description="events acknowledged by the broker (acks=all)")
    rejected: list[Rejection] = Field(description="events that failed the source's schema")
    rejected_count: int


PUSH_EXAMPLE: list[dict[str, Any]] = [
    {"user_id": "u1", "amount": 12.5, "ts": "2026-12-01T10:00:00Z"}]


def push_router(service: PushService, max_body_bytes: int) -> APIRouter:
    """The route; the app's shutdown (this router's lifespan, merged by ``include_router``)
    delivers what is queued and stops the producer."""

    @asynccontextmanager
    async def lifespan(_app):
        yield
        await asyncio.get_running_loop().run_in_executor(None, service.close)

    router = APIRouter(lifespan=lifespan)

    @router.post(
        "/v1/push/{source}", tags=["ingest"], response_model=PushResponse,
        summary="Publish a batch of events to a source's topic (schema-checked, SDK partitioner, "
        "acks=all)",
        responses={s: {"description": d} for s, d in (
            (400, "not a JSON list, empty, or too many events"), (404, "unknown source"),
            (413, "body too large"), (422, "no event is valid: nothing published"),
            (503, "broker unavailable, or some events not acknowledged (see failed)"))},
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
            "schema": {"type": "array", "items": {"type": "object"}},
            "example": PUSH_EXAMPLE}}}},
    )
    async def push(source: str, request: Request) -> Response:
        body = await read_body(request.receive, max_body_bytes)
        status, out = await service.push(source, body)
        return Response(out, status_code=status, media_type="application/json")

    return router


def ingest_router(repo: FeatureRepo, bootstrap: str | None, max_body_bytes: int,
                  security: KafkaSecurity | None = None) -> APIRouter:
    """Push for every source of ``repo``; the Kafka producer is made at the first push."""
    return push_router(PushService(dict(repo.sources), bootstrap, security=security),
                       max_body_bytes)
