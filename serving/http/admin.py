"""State changes over HTTP (scope ``admin``): move a model's alias, forget an entity.

Each route passes the request's principal (``serving.auth.actor.of_scope``: ``token:<name>``,
``anonymous`` with auth off) explicitly to what writes the audit record, so the audit log says
which token did it. The work (files, Redis) runs off the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from features.errors import OfflineStoreError, RegistryError, TesseraError
from features.settings import Settings
from serving.auth import actor
from serving.http.errors import ApiError, error_responses
from serving.registry.errors import GateFailed


class AliasRequest(BaseModel):
    version: str | None = Field(None, max_length=64,
                                description="version or alias to point at; null removes it")
    why: str = Field(..., min_length=1, max_length=2000, description="reason, audited")
    override: bool = Field(False, description="make a champion that fails its review gates "
                                              "(audited; needs why)")


class AliasResponse(BaseModel):
    model: str
    alias: str
    before: str | None
    after: str | None
    who: str
    when: str
    why: str
    gates: dict[str, Any] | str | None = Field(
        None, description="champion moves: the review gates' result, or 'skipped'")
    override: bool | None = None


class ForgetRequest(BaseModel):
    entity: str = Field(..., min_length=1, max_length=1000,
                        description="the key value, e.g. u1; a composite key as a JSON list")
    entity_name: str | None = Field(None, max_length=200, description="which entity, when "
                                    "several have as many key columns")
    sources: list[str] = Field(default_factory=list, max_length=100,
                               description="only these sources' event logs")
    views: list[str] = Field(default_factory=list, max_length=100,
                             description="only these views' sources")
    why: str = Field("", max_length=2000, description="why (audited), e.g. the request's id")


class ForgetResponse(BaseModel):
    entity: str
    online_keys: int
    offline_rows: int
    sources: dict[str, dict[str, int]]
    logged_rows: dict[str, int]
    not_erased: list[str]
    complete: bool


def admin_router(scorer: Any, settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/v1/admin", tags=["admin"])
    registry = scorer.models.registry

    async def off_loop(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    @router.post("/models/{name}/aliases/{alias}", response_model=AliasResponse,
                 responses=error_responses(400, 404, 422, 503),
                 summary="Point a model's alias (e.g. champion) at a version, gated and audited")
    async def move_alias(name: str, alias: str, body: AliasRequest,
                         request: Request) -> dict[str, Any]:
        who = actor.of_scope(request.scope)

        def move() -> dict[str, Any]:
            try:
                registry.resolve(name, "latest")
            except RegistryError as e:
                raise ApiError(404, "unknown_model", str(e)) from None
            try:
                return registry.set_alias(name, alias, body.version, who=who, why=body.why,
                                          override=body.override)
            except GateFailed as e:
                raise ApiError(422, "gates_failed", str(e)) from None
            except RegistryError as e:
                raise ApiError(400, "invalid_alias", str(e)) from None

        return await off_loop(move)

    @router.post("/forget", response_model=ForgetResponse,
                 responses=error_responses(400, 503),
                 summary="Erase an entity: online hash, event log, prediction/outcome logs")
    async def forget(body: ForgetRequest, request: Request) -> dict[str, Any]:
        from serving.forget import forget_entity

        who = actor.of_scope(request.scope)

        def run() -> dict[str, Any]:
            try:
                out = forget_entity(settings, scorer.store.repo, body.entity, who=who,
                                    why=body.why, entity=body.entity_name,
                                    sources=body.sources, views=body.views,
                                    redis_client=scorer.store.client)
            except (OfflineStoreError, TesseraError) as e:
                raise ApiError(400, "invalid_forget", str(e)) from None
            if not out["complete"]:  # audited as far as it went
                raise ApiError(503, "store_unavailable", "; ".join(out["not_erased"]))
            return out

        return await off_loop(run)

    return router
