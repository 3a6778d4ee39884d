"""Build the scorer app from settings: what ``tessera serve`` runs in each worker process.

Configuration is by environment so uvicorn worker processes can rebuild it (``app_from_env`` is
an app factory): ``TESSERA_HOME``, ``REDIS_URL``, ``TESSERA_MODELS_URI`` (default
``$TESSERA_HOME/models``), ``TESSERA_SERVE_MODELS`` (comma-separated ``name`` or
``name@alias``), ``TESSERA_FEATURE_REPO`` (a repo file; default the applied registry),
``TESSERA_REDIS_TIMEOUT_MS`` (default 100), ``TESSERA_MAX_ENTITIES`` (default 1000),
``TESSERA_RELOAD_S`` (default 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from features.online.read import OnlineStore
from features.settings import Settings
from serving.http.app import FastPredict, create_app, fast_app
from serving.registry import CHAMPION, ModelRegistry
from serving.scorer.models import ModelSet
from serving.scorer.repo import load_feature_repo
from serving.scorer.scorer import Scorer


def redis_client(url: str, timeout_s: float):
    """A client that fails fast: short timeouts, no retries (the caller answers 503)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


@dataclass
class ServeConfig:
    redis_url: str
    models_uri: str
    models: list[str]
    feature_repo: str | None = None
    redis_timeout_ms: float = 100.0
    max_entities: int = 1000
    reload_s: float = 1.0

    @classmethod
    def from_env(cls) -> ServeConfig:
        s = Settings.from_env()
        models = [m for m in os.environ.get("TESSERA_SERVE_MODELS", "").split(",") if m]
        return cls(
            redis_url=s.require_redis(),
            models_uri=os.environ.get("TESSERA_MODELS_URI") or str(s.models_dir),
            models=models,
            feature_repo=os.environ.get("TESSERA_FEATURE_REPO") or None,
            redis_timeout_ms=float(os.environ.get("TESSERA_REDIS_TIMEOUT_MS", 100)),
            max_entities=int(os.environ.get("TESSERA_MAX_ENTITIES", 1000)),
            reload_s=float(os.environ.get("TESSERA_RELOAD_S", 1.0)),
        )

    def to_env(self) -> dict[str, str]:
        env = {
            "REDIS_URL": self.redis_url,
            "TESSERA_MODELS_URI": self.models_uri,
            "TESSERA_SERVE_MODELS": ",".join(self.models),
            "TESSERA_REDIS_TIMEOUT_MS": str(self.redis_timeout_ms),
            "TESSERA_MAX_ENTITIES": str(self.max_entities),
            "TESSERA_RELOAD_S": str(self.reload_s),
        }
        if self.feature_repo:
            env["TESSERA_FEATURE_REPO"] = str(self.feature_repo)
        return env


def build_scorer(cfg: ServeConfig) -> Scorer:
    repo = load_feature_repo(cfg.feature_repo, Settings.from_env())
    client = redis_client(cfg.redis_url, cfg.redis_timeout_ms / 1000)
    models = ModelSet(ModelRegistry(cfg.models_uri), reload_s=cfg.reload_s)
    for m in cfg.models:
        name, _, ref = m.partition("@")
        models.serve(name, ref or CHAMPION)
    models.start()
    return Scorer(OnlineStore(client, repo, max_entities=cfg.max_entities), models)


def build_app(cfg: ServeConfig) -> FastPredict:
    return fast_app(create_app(build_scorer(cfg), max_entities=cfg.max_entities))


def app_from_env() -> FastPredict:
    return build_app(ServeConfig.from_env())
