"""``POST /v1/outcomes``: labels for served predictions, over HTTP, each recorded exactly once.

A label names the prediction it answers by ``request_id`` (every predict response carries one
per entity), or by ``model`` + ``entity`` + ``at`` (the time it was observed; the report matches
it to the entity's latest served prediction before it). Body: one outcome object, or
``{"outcomes": [...]}`` with up to ``MAX_OUTCOMES``::

    {"request_id": "9f1c...", "label": 1}
    {"model": "fraud", "entity": {"user_id": "u1"}, "at": "2026-12-01T10:00:00Z", "label": 0}

Exactly once: each outcome's identity (its request id, or model + entity key + time) is claimed
in Redis with ``SET NX`` before it is written, and the claim is confirmed after the write is
acknowledged; a repeat of a recorded outcome answers ``"duplicate"`` and writes nothing, a
failed write releases the claim (503, safe to retry). The one window left: a process that dies
after the write and before the confirmation lets a retry (after ``PENDING_S``) write a second
copy; the report's join keeps one label per request, so it still counts once.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import orjson
import redis
from fastapi import APIRouter, Request
from fastapi.responses import Response

from features.errors import RegistryError, TesseraError
from features.online.read import parse_at
from serving.experiments.records import now_us
from serving.http.errors import ApiError, dumps, error_responses, read_body
from serving.http.outcome_log import OutcomeLog

MAX_OUTCOMES = 1000
PENDING_S = 60  # a claim whose write never confirmed expires after this
KEEP_S = 8 * 24 * 3600  # identities are remembered past the report's default 7-day max delay
PREFIX = "tessera:outcome:"


def _bad(message: str, field: str, code: str = "invalid_field") -> ApiError:
    return ApiError(400, code, message, field)


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _num(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


class Outcomes:
    """Validates, deduplicates and writes outcomes (framework-free, for tests and the route)."""

    def __init__(self, scorer: Any, log: OutcomeLog, client: Any = None) -> None:
        self.scorer = scorer
        self.log = log
        self.client = client if client is not None else scorer.store.client

    def _row(self, o: Any, where: str) -> tuple[str, dict]:
        if not isinstance(o, dict):
            raise _bad("each outcome must be an object with a label and a request_id, or a "
                       "model, an entity and at", where or "body")
        label = o.get("label")
        if not _num(label) and type(label) is not bool:
            raise _bad('"label" must be a number (0/1 for a binary model)', _at(where, "label"))
        try:
            ts = now_us() if o.get("at") is None else parse_at(o["at"])
        except (ValueError, TypeError) as e:
            raise _bad(f"at: {e}; send ISO-8601 or epoch milliseconds", _at(where, "at"),
                       "invalid_at") from None
        rid = o.get("request_id")
        model = o.get("model")
        if model is not None and type(model) is not str:
            raise _bad('"model" must be a model name', _at(where, "model"))
        if rid is not None:
            if type(rid) is not str or not 0 < len(rid) <= 128:
                raise _bad('"request_id" must be the string a predict response returned',
                           _at(where, "request_id"))
            if "entity" in o:
                raise _bad("give request_id or entity, not both", where or "body")
            return f"r|{rid}", {"label": float(label), "ts": ts, "request_id": rid,
                                "entity_key": None, "model": model}
        entity = o.get("entity")
        if entity is None:
            raise _bad('an outcome needs "request_id", or "model" + "entity" (+ "at")',
                       where or "body", "missing_key")
        if not isinstance(entity, dict) or not entity:
            raise _bad('"entity" must be an object of key columns, e.g. {"user_id": "u1"}',
                       _at(where, "entity"))
        for k, v in entity.items():
            if not (type(v) is str or _num(v)):
                raise _bad(f"entity key {k!r} must be a string or a number",
                           _at(where, f"entity.{k}"))
        if model is None:
            raise _bad('an outcome by entity needs "model" (its entity keys form the key)',
                       _at(where, "model"), "missing_key")
        try:
            plan = self.scorer.plan(self.scorer.models.get(model))
        except RegistryError as e:
            raise ApiError(404, "unknown_model", str(e), _at(where, "model")) from None
        missing = [k for k in plan.entity_keys if k not in entity]
        if missing:
            raise _bad(f"entity lacks keys {missing}; {model} needs {list(plan.entity_keys)}",
                       _at(where, "entity"), "missing_key")
        key = self.scorer.entity_key(plan, entity)
        return f"e|{model}|{key}|{ts}", {"label": float(label), "ts": ts, "request_id": None,
                                          "entity_key": key, "model": model}

    def parse(self, body: bytes) -> list[tuple[str, dict]]:
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise _bad(f"request body is not JSON: {e}", "body", "invalid_json") from None
        if isinstance(req, dict) and "outcomes" in req:
            items, base = req["outcomes"], "outcomes"
            if not isinstance(items, list) or not items:
                raise _bad('"outcomes" must be a non-empty list of outcome objects', base)
            if len(items) > MAX_OUTCOMES:
                raise _bad(f"{len(items)} outcomes in one request; the limit is {MAX_OUTCOMES}",
                           base, "too_many_outcomes")
            return [self._row(o, f"{base}[{i}]") for i, o in enumerate(items)]
        if not isinstance(req, dict):
            raise _bad("request body must be an outcome object or {\"outcomes\": [...]}", "body",
                       "invalid_json")
        return [self._row(req, "")]

    def record(self, body: bytes) -> dict[str, Any]:
        rows = self.parse(body)
        statuses, claimed, fresh = [], [], []
        first: dict[str, int] = {}  # identity -> its first index in this request
        for i, (ident, _) in enumerate(rows):
            first.setdefault(ident, i)
        keys = {ident: PREFIX + hashlib.blake2b(ident.encode(), digest_size=16).hexdigest()
                for ident in first}
        pipe = self.client.pipeline(transaction=False)  # one round trip for every claim
        for ident in first:
            pipe.set(keys[ident], b"pending", nx=True, ex=PENDING_S)
        won = dict(zip(first, pipe.execute(), strict=True))
        for i, (ident, row) in enumerate(rows):
            if first[ident] != i or not won[ident]:
                statuses.append("duplicate")
                continue
            claimed.append(keys[ident])
            fresh.append(row)
            statuses.append("recorded")
        if fresh:
            try:
                self.log.write(fresh)
            except Exception as e:
                for key in claimed:  # one by one: a cluster refuses multi-slot DEL
                    self.client.delete(key)
                raise ApiError(503, "outcome_log_unavailable",
                               f"the outcome log did not accept the labels ({type(e).__name__}: "
                               f"{e}); nothing was recorded, retry") from None
            pipe = self.client.pipeline(transaction=False)
            for key in claimed:
                pipe.set(key, b"done", ex=KEEP_S)
            pipe.execute()
        results = []
        for (_, row), status in zip(rows, statuses, strict=True):
            ident = {"request_id": row["request_id"]} if row["request_id"] else {
                "model": row["model"], "entity_key": row["entity_key"], "ts": row["ts"]}
            results.append({**ident, "status": status})
        return {"recorded": statuses.count("recorded"),
                "duplicates": statuses.count("duplicate"), "results": results}


def outcomes_router(outcomes: Outcomes, max_body_bytes: int = 1 << 20) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/outcomes", tags=["experiments"],
                 responses=error_responses(400, 413, 503),
                 summary="Record labels by request id or by model + entity + time, once each")
    async def post_outcomes(request: Request) -> Response:
        import asyncio

        body = await read_body(request.receive, max_body_bytes)
        try:
            out = await asyncio.get_running_loop().run_in_executor(None, outcomes.record, body)
        except ApiError:
            raise
        except (TesseraError, redis.RedisError) as e:
            raise ApiError(503, "store_unavailable",
                           f"online store unavailable, retry later: {e}") from None
        return Response(dumps(out), media_type="application/json")

    return router


def from_settings(scorer: Any, settings: Any, max_body_bytes: int = 1 << 20) -> APIRouter:
    """The route the scorer mounts: Kafka's ``outcomes`` topic when a broker is configured,
    else the outcome dataset the report reads."""
    from features.kafka_config import KafkaSecurity
    from serving.experiments.report import dataset_dirs
    from serving.http.outcome_log import KafkaOutcomeLog, ParquetOutcomeLog

    log: OutcomeLog = (KafkaOutcomeLog(settings.kafka_bootstrap,
                                       security=KafkaSecurity.from_settings(settings))
                       if settings.kafka_bootstrap
                       else ParquetOutcomeLog(dataset_dirs(settings.offline_location)[1]))
    return outcomes_router(Outcomes(scorer, log), max_body_bytes)
