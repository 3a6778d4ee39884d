"""Build the scorer app from one ``ServeConfig``: what ``tessera serve`` runs in each worker.

The config is built once from the settings (``features.settings``: tessera.yaml, environment,
flags) and handed to each worker process as an argument; ``app_from_settings`` is the app
factory for running the scorer under an external server (``uvicorn --factory``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from features.kafka_config import KafkaSecurity
from features.online.connection import RedisTransport
from features.online.read import OnlineStore
from features.repos import resolve_repo
from features.settings import ServeSettings, Settings
from serving.auth.guard import AuthGuard
from serving.auth.login import login_router
from serving.auth.tokens import TokenStore
from serving.http.app import FastPredict, Limits, create_app, fast_app
from serving.registry import CHAMPION, ModelRegistry
from serving.scorer.models import ModelSet
from serving.scorer.scorer import Scorer

log = logging.getLogger(__name__)


def redis_client(url: str, timeout_s: float, transport: RedisTransport | None = None):
    """A client that fails fast: short timeouts, no retries (the caller answers 503).
    ``redis+cluster://`` URLs give a Redis Cluster client (``features.online.cluster``);
    ``transport`` carries the ACL user, password and TLS files (``features.online.connection``)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from features.online.connection import connect

    return connect(
        url,
        transport,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


@dataclass
class ServeConfig:
    """Everything one scorer process needs, resolved (no environment reads after this)."""

    redis_url: str
    models_uri: str
    models: list[str]
    feature_repo: str | None = None
    redis_timeout_ms: float = 100.0
    redis_spin_us: float = 200.0
    max_entities: int = 1000
    max_features: int = 256
    max_body_bytes: int = 1 << 20
    inline_cells: int = 512
    reload_s: float = 1.0
    log_vectors: bool = False
    hook: str | None = None
    log_level: str = "warning"
    log_config: dict | None = None  # a logging.config dict each worker applies (JSON lines)
    access_log: bool = False  # one log record per request (uvicorn.access)
    settings: Settings = field(default_factory=Settings.from_env)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> ServeConfig:
        """The ``serve:`` section of ``settings``, with ``overrides`` (e.g. flags) on top."""
        given = {k: v for k, v in overrides.items() if v is not None}
        models_uri = given.pop("models_uri", None) or settings.models_location
        serve: ServeSettings = settings.serve.model_copy(update=given)
        return cls(
            redis_url=settings.require_redis(),
            models_uri=models_uri,
            models=list(serve.models),
            feature_repo=str(settings.repo) if settings.repo else None,
            redis_timeout_ms=serve.redis_timeout_ms,
            redis_spin_us=serve.redis_spin_us,
            max_entities=serve.max_entities,
            max_features=serve.max_features,
            max_body_bytes=serve.max_body_bytes,
            inline_cells=serve.inline_cells,
            reload_s=serve.reload_s,
            log_vectors=serve.log_vectors,
            hook=serve.hook,
            settings=settings,
        )


def build_scorer(cfg: ServeConfig) -> Scorer:
    repo = resolve_repo(cfg.feature_repo, cfg.settings)
    client = redis_client(cfg.redis_url, cfg.redis_timeout_ms / 1000,
                          RedisTransport.from_settings(cfg.settings))
    models = ModelSet(ModelRegistry(cfg.models_uri), reload_s=cfg.reload_s)
    for m in cfg.models:
        name, _, ref = m.partition("@")
        models.serve(name, ref or CHAMPION)
    store = OnlineStore(client, repo, max_entities=cfg.max_entities, spin_us=cfg.redis_spin_us)
    scorer = Scorer(store, models)
    attach_experiments(scorer, cfg.settings)
    if cfg.log_vectors:
        from serving.monitoring.hook import log_vectors

        log_vectors(scorer)
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


def attach_experiments(scorer: Scorer, settings: Settings) -> None:
    """Route every served model that has a deployment spec through its experiment (arms,
    shadows, prediction log to Kafka when a broker is configured). A failure here is logged
    and the champion is served alone: the scorer must come up even when Kafka is down."""
    from serving.experiments.wiring import attach_deployed

    storage = scorer.models.registry.storage
    try:  # the specs live beside the models, on disk or in a bucket
        routed = attach_deployed(scorer, storage.uri, settings.kafka_bootstrap,
                                 security=KafkaSecurity.from_settings(settings))
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
    settings = cfg.settings
    mount(app, settings, scorer.models.registry)
    specs = scorer.models.registry.storage.uri  # the served registry's (the specs are there)
    app.include_router(experiments_router(specs, settings.offline_location))
    app.include_router(catalog_router(scorer.store.repo, scorer.models.registry))
    app.include_router(ingest_router(scorer.store.repo, settings.kafka_bootstrap,
                                     cfg.max_body_bytes, KafkaSecurity.from_settings(settings)))
    from serving.dashboard.model_card import model_card_router
    from serving.http.outcomes import from_settings as outcomes_router

    app.include_router(model_card_router(scorer.models.registry))
    app.include_router(outcomes_router(scorer, settings, cfg.max_body_bytes))
    from serving.http.admin import admin_router

    app.include_router(admin_router(scorer, settings))
    tokens = TokenStore.at_home(settings.home)
    app.include_router(login_router(tokens))
    return fast_app(app, AuthGuard(tokens))


def app_from_settings(cfg: ServeConfig | None = None) -> FastPredict:
    """The app for ``cfg`` (default: this process's settings), start-up garbage frozen."""
    import gc

    app = build_app(cfg or ServeConfig.from_settings(Settings.from_env()))
    gc.collect()
    gc.freeze()  # start-up objects (repo, plans, boosters) leave the collector's scans
    return app
