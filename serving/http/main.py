"""Build the scorer app from settings: what ``tessera serve`` runs in each worker process.

Configuration is by environment so uvicorn worker processes can rebuild it (``app_from_env`` is
an app factory): ``TESSERA_HOME``, ``REDIS_URL``, ``TESSERA_MODELS_URI`` (default
``$TESSERA_HOME/models``), ``TESSERA_SERVE_MODELS`` (comma-separated ``name`` or
``name@alias``), ``TESSERA_FEATURE_REPO`` (a repo file; default the applied registry),
``TESSERA_REDIS_TIMEOUT_MS`` (default 100), ``TESSERA_REDIS_SPIN_US`` (default 200: how long a
request busy-polls for Redis' reply before sleeping, see ``features.online.hmget``; 0 when the
workers outnumber the cores), ``TESSERA_MAX_ENTITIES`` (default 1000),
``TESSERA_MAX_FEATURES`` (default 256: feature refs per ``/v1/features`` request),
``TESSERA_MAX_BODY_BYTES`` (default 1 MiB; larger bodies are a 413), ``TESSERA_INLINE_CELLS``
(default 512: entities x features a request may have and still run on the event loop),
``TESSERA_RELOAD_S`` (default 1), ``TESSERA_SCORER_HOOK`` (``module:function`` called with the
``Scorer`` in every worker once it is built: how experiments attach ``scorer.routers``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from features.online.read import OnlineStore
from features.settings import Settings
from serving.http.app import FastPredict, Limits, create_app, fast_app
from serving.registry import CHAMPION, ModelRegistry
from serving.scorer.models import ModelSet
from serving.scorer.repo import load_feature_repo
from serving.scorer.scorer import Scorer

log = logging.getLogger(__name__)


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


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@dataclass
class ServeConfig:
    redis_url: str
    models_uri: str
    models: list[str]
    feature_repo: str | None = None
    redis_timeout_ms: float = 100.0
    redis_spin_us: float = 200.0
    max_entities: int = 1000
    # read from the environment when not given (tessera serve has no flags for them)
    max_features: int = field(default_factory=lambda: _env_int("TESSERA_MAX_FEATURES", 256))
    max_body_bytes: int = field(
        default_factory=lambda: _env_int("TESSERA_MAX_BODY_BYTES", 1 << 20))
    inline_cells: int = field(default_factory=lambda: _env_int("TESSERA_INLINE_CELLS", 512))
    reload_s: float = 1.0
    hook: str | None = None

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
            redis_spin_us=float(os.environ.get("TESSERA_REDIS_SPIN_US", 200)),
            max_entities=int(os.environ.get("TESSERA_MAX_ENTITIES", 1000)),
            reload_s=float(os.environ.get("TESSERA_RELOAD_S", 1.0)),
            hook=os.environ.get("TESSERA_SCORER_HOOK") or None,
        )

    def to_env(self) -> dict[str, str]:
        env = {
            "REDIS_URL": self.redis_url,
            "TESSERA_MODELS_URI": self.models_uri,
            "TESSERA_SERVE_MODELS": ",".join(self.models),
            "TESSERA_REDIS_TIMEOUT_MS": str(self.redis_timeout_ms),
            "TESSERA_REDIS_SPIN_US": str(self.redis_spin_us),
            "TESSERA_MAX_ENTITIES": str(self.max_entities),
            "TESSERA_MAX_FEATURES": str(self.max_features),
            "TESSERA_MAX_BODY_BYTES": str(self.max_body_bytes),
            "TESSERA_INLINE_CELLS": str(self.inline_cells),
            "TESSERA_RELOAD_S": str(self.reload_s),
        }
        if self.feature_repo:
            env["TESSERA_FEATURE_REPO"] = str(self.feature_repo)
        if self.hook:
            env["TESSERA_SCORER_HOOK"] = self.hook
        return env


def build_scorer(cfg: ServeConfig) -> Scorer:
    repo = load_feature_repo(cfg.feature_repo, Settings.from_env())
    client = redis_client(cfg.redis_url, cfg.redis_timeout_ms / 1000)
    models = ModelSet(ModelRegistry(cfg.models_uri), reload_s=cfg.reload_s)
    for m in cfg.models:
        name, _, ref = m.partition("@")
        models.serve(name, ref or CHAMPION)
    store = OnlineStore(client, repo, max_entities=cfg.max_entities, spin_us=cfg.redis_spin_us)
    scorer = Scorer(store, models)
    attach_experiments(scorer)
    if cfg.hook:
        run_hook(cfg.hook, scorer)
    models.start()
    return scorer


def run_hook(spec: str, scorer: Scorer) -> None:
    """Call ``module:function`` with the scorer (e.g. to set ``scorer.routers[name]``)."""
    import importlib

    from features.errors import TesseraError

    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise TesseraError(
            f"scorer hook {spec!r} cannot be loaded ({e}); give it as package.module:function"
        ) from e
    fn(scorer)


def attach_experiments(scorer: Scorer) -> None:
    """Route every served model that has a deployment spec through its experiment (arms,
    shadows, prediction log to Kafka when a broker is configured). A failure here is logged
    and the champion is served alone: the scorer must come up even when Kafka is down."""
    from serving.experiments.wiring import attach_deployed

    storage = scorer.models.registry.storage
    if not storage.local:
        return  # deployment specs live in a local models folder
    try:
        routed = attach_deployed(scorer, storage.root, Settings.from_env().kafka_bootstrap)
    except Exception as e:  # noqa: BLE001 - any failure degrades to champion-only serving
        log.error("experiments not attached, serving champions only: %r", e)
        return
    for name in routed:
        log.info("%s: requests routed through its experiment", name)


def build_app(cfg: ServeConfig) -> FastPredict:
    """The served app: predict/features routes, the monitor and dashboard (``mount``)."""
    from serving.dashboard.sources import mount
    from serving.experiments.routes import experiments_router
    from serving.http.catalog import catalog_router
    from serving.ingest.routes import ingest_router

    scorer = build_scorer(cfg)
    app = create_app(scorer, limits=Limits(max_entities=cfg.max_entities,
                                           max_features=cfg.max_features,
                                           max_body_bytes=cfg.max_body_bytes,
                                           inline_cells=cfg.inline_cells))
    settings = Settings.from_env()
    mount(app, settings, scorer.models.registry)
    app.include_router(experiments_router(settings.models_dir, settings.offline_dir))
    app.include_router(catalog_router(scorer.store.repo, scorer.models.registry))
    app.include_router(ingest_router(scorer.store.repo, settings.kafka_bootstrap,
                                     cfg.max_body_bytes))
    from serving.dashboard.model_card import model_card_router
    from serving.http.outcomes import from_settings as outcomes_router

    app.include_router(model_card_router(scorer.models.registry))
    app.include_router(outcomes_router(scorer, settings, cfg.max_body_bytes))
    return fast_app(app)


def app_from_env() -> FastPredict:
    import gc

    app = build_app(ServeConfig.from_env())
    gc.collect()
    gc.freeze()  # start-up objects (repo, plans, boosters) leave the collector's scans
    return app
