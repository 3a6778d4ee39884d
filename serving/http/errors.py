"""The scorer's one error body, and the handlers that give every error path of the app that body.

Every 4xx/5xx the scorer answers is JSON::

    {"error": "<what happened and what to do>", "code": "<stable code>", "field": "<where>"|null}

plus extra fields for some codes (a 422 ``inexact_read`` adds ``entity``, ``feature``, ``at``,
``earliest_exact``...; ``invalid_field`` from request validation adds ``errors``: every problem
as ``{"field", "error"}``). ``field`` is a JSON path into the request (``at``,
``entities[3].user_id``, ``request_features[0].amount``) or a path/query parameter name
(``model``, ``reps``). Codes are listed in ``docs/serving.md``; messages never carry absolute
filesystem paths (``scrub``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

# code for an HTTPException raised by a route (or by routing) that names no code of its own
STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type",
    422: "unprocessable", 429: "too_many_requests", 500: "internal", 503: "unavailable",
}

# an absolute path: /a/b..., C:\a\b..., not the slash inside "a/b"
_ABS_PATH = re.compile(r"(?<![\w.~])(?:[A-Za-z]:)?[/\\](?:[^\s'\"/\\<>]+[/\\])+[^\s'\",;<>)]*")


class ApiError(Exception):
    """A request the scorer refuses: HTTP ``status``, stable ``code``, ``field`` (or None)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return error_body(self.code, str(self), self.field, **self.extra)


def scrub(message: str) -> str:
    """``message`` without absolute filesystem paths (they say where the server keeps its files)."""
    return _ABS_PATH.sub("<path>", message)


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": scrub(message), "code": code, "field": field, **extra}


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(status: int, body: dict[str, Any],
                   headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json",
                    headers=headers)


def field_of(loc: tuple | list) -> str | None:
    """A pydantic/FastAPI error location as a JSON path: ("body", "entities", 0, "user_id")
    -> "entities[0].user_id"; ("query", "reps") -> "reps"."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p in ("int", "float", "str", "bool", "list", "dict", "none"):
            continue  # the union member pydantic tried, not a place in the request
        else:
            out += f".{p}" if out else str(p)
    return out or None


ERROR_SCHEMA = {
    "title": "ErrorBody", "type": "object", "required": ["error", "code"],
    "properties": {"error": {"type": "string", "description": "what happened and what to do"},
                   "code": {"type": "string", "description": "stable, e.g. invalid_field"},
                   "field": {"anyOf": [{"type": "string"}, {"type": "null"}],
                             "description": "where in the request"}},
}


_WHAT = {400: "invalid request", 401: "no or an invalid token", 403: "the token lacks the scope",
         404: "no such model, experiment, view or file", 413: "body too large",
         422: "well-formed but not answerable", 503: "a store or the broker is unavailable"}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these statuses, each with the one error body."""
    return {c: {"description": _WHAT[c], "content": {"application/json": {
        "schema": ERROR_SCHEMA}}} for c in codes}


def document_errors(app: FastAPI) -> None:
    """Make the OpenAPI say what ``install`` does: FastAPI documents a 422 with its own
    ``HTTPValidationError`` body on every route that takes input; the scorer answers those
    requests with a 400 in the one error body, so the spec says that instead."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = original()
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("ErrorBody", ERROR_SCHEMA)
        ours = {"description": "invalid request",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/"
                                                                    "ErrorBody"}}}}
        for ops in spec.get("paths", {}).values():
            for op in ops.values():
                responses = op.get("responses", {})
                if "HTTPValidationError" in orjson.dumps(responses.get("422", {})).decode():
                    del responses["422"]
                    responses.setdefault("400", ours)
        if "HTTPValidationError" not in orjson.dumps(spec.get("paths", {})).decode():
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    """Give every error of ``app`` the one body: request validation (FastAPI's ``{"detail":
    [...]}`` becomes a 400 ``invalid_field``), ``HTTPException`` from any route or from routing
    (404 ``not_found``, 405 ...), ``ApiError``, and anything unexpected (500 ``internal``,
    logged, no details). The OpenAPI spec documents it (``document_errors``)."""
    document_errors(app)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        errors = [{"field": field_of(e.get("loc", ())), "error": str(e.get("msg", ""))}
                  for e in exc.errors()]
        first = errors[0] if errors else {"field": None, "error": "invalid request"}
        where = f"{first['field']}: " if first["field"] else ""
        return error_response(400, error_body("invalid_field", where + first["error"],
                                              first["field"], errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        code = STATUS_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else orjson.dumps(exc.detail).decode()
        return error_response(exc.status_code, error_body(code, detail), exc.headers)

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.body())

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> Response:
        log.error("unexpected error answering a request", exc_info=exc)
        return error_response(500, error_body(
            "internal", f"internal error ({type(exc).__name__}); this is a bug, please report it"
        ))


class Guard:
    """ASGI middleware in front of every route: a path with a ``.``/``..`` segment, a NUL or a
    backslash is a 400 ``invalid_path`` (names in paths become file names in the registry), and a
    body whose ``Content-Length`` exceeds ``max_body_bytes`` is a 413 ``body_too_large`` before
    it is read. Bodies sent without a length are capped as they are read (``read_body``)."""

    def __init__(self, app, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            problem = check_request(scope, self.max_body_bytes)
            if problem is not None:
                await send_error(send, problem)
                return
        await self.app(scope, receive, send)


def check_request(scope, max_body_bytes: int) -> ApiError | None:
    path = scope.get("path", "")
    segments = path.split("/")
    if "." in segments or ".." in segments or "\x00" in path or "\\" in path:
        return ApiError(400, "invalid_path",
                        "the path has a '.' or '..' segment, a NUL or a backslash; name models "
                        "and experiments by their plain names", "path")
    for k, v in scope.get("headers", ()):
        if k == b"content-length":
            try:
                n = int(v)
            except ValueError:
                return ApiError(400, "bad_request", "Content-Length is not a number")
            if n > max_body_bytes:
                return too_large(max_body_bytes)
    return None


def too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large",
                    f"request body larger than {limit} bytes; split the batch", "body")


async def read_body(receive, limit: int) -> bytes:
    """The whole request body, or ``ApiError`` 413 as soon as it exceeds ``limit`` bytes."""
    chunks = []
    size = 0
    more = True
    while more:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        more = msg.get("more_body", False)
    return b"".join(chunks)


async def send_error(send, err: ApiError) -> None:
    await send_json(send, err.status, dumps(err.body()))


async def send_json(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]})
    await send({"type": "http.response.body", "body": body})
