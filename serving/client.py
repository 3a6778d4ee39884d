"""A small Python client for the scorer's HTTP API (httpx, keep-alive connection pool)."""

from __future__ import annotations

import os
from typing import Any

import httpx
import orjson

from features.errors import TesseraError


class ScorerError(TesseraError):
    """The scorer answered with an error: ``status`` (HTTP), ``code`` and ``field`` from the
    error body (``docs/serving.md``), the whole ``body``."""

    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.body = body or {}  # e.g. a 422's entity, feature and earliest_exact
        self.code: str | None = self.body.get("code")
        self.field: str | None = self.body.get("field")


class ScorerClient:
    """``ScorerClient("http://localhost:8000", token=...).predict("fraud", [{"user_id": "u1"}])``.

    ``token``: an API token (``tessera tokens create``), sent as ``Authorization: Bearer``;
    by default ``TESSERA_TOKEN`` from the environment, as the CLI's users set it."""

    def __init__(self, base_url: str, timeout_s: float = 2.0, token: str | None = None) -> None:
        token = token if token is not None else os.environ.get("TESSERA_TOKEN")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post(path, content=orjson.dumps(body),
                           headers={"content-type": "application/json"})
        return self._json(r)

    @staticmethod
    def _json(r: httpx.Response) -> dict[str, Any]:
        try:
            data = orjson.loads(r.content) if r.content else {}
        except orjson.JSONDecodeError:
            data = {}
        if r.status_code >= 400:
            if not isinstance(data, dict):
                data = {}
            msg = data.get("error") or data.get("detail") or r.text
            raise ScorerError(r.status_code, str(msg), data if isinstance(data, dict) else None)
        return data

    def predict(
        self,
        model: str,
        entities: list[dict[str, Any]],
        request_features: list[dict[str, Any]] | None = None,
        at: int | float | str | None = None,
    ) -> dict[str, Any]:
        """``at``: ISO-8601 string or epoch milliseconds (default now)."""
        body: dict[str, Any] = {"entities": entities}
        if request_features is not None:
            body["request_features"] = request_features
        if at is not None:
            body["at"] = at
        return self._post(f"/v1/predict/{model}", body)

    def features(
        self, features: list[str], entities: list[dict[str, Any]],
        at: int | float | str | None = None,
    ) -> dict[str, Any]:
        return self._post("/v1/features", {"features": features, "entities": entities, "at": at})

    def outcomes(self, outcomes: list[dict[str, Any]]) -> dict[str, Any]:
        """Labels for served predictions: ``{"request_id": ..., "label": 1}`` each, or by
        ``model`` + ``entity`` + ``at`` (``POST /v1/outcomes``; a repeat counts once)."""
        return self._post("/v1/outcomes", {"outcomes": outcomes})

    def healthy(self) -> bool:
        return self.http.get("/healthz").status_code == 200

    def ready(self) -> dict[str, Any]:
        r = self.http.get("/readyz")
        return {"status": r.status_code, **orjson.loads(r.content)}

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ScorerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
