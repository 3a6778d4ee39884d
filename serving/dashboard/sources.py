"""Providers wired to what a Tessera home folder holds, and to Prometheus endpoints.

``from_settings`` gives a ``DashboardData`` that reads each model's drift (reference + prediction
log), its experiment report, and every audit log under ``Settings.models_location`` (a
folder or a bucket URI: listed through the model registry's storage, never globbed on disk).
The two reports are cached for ``cache_s`` (``serve.dashboard_cache_s``, default 10 s): they
read and join whole logs, and a page that auto-refreshes in several tabs must not recompute
them on every load.
``scrape`` reads freshness and throughput from ``/metrics`` endpoints (worker, scorer): gauges
whose name ends in ``freshness_seconds`` labelled by ``view``, and counters whose name ends in
``events_total`` or ``requests_total``; a rate needs two scrapes, so the first load shows the
totals with a rate of 0. Consumer lag per view comes from ``serving.dashboard.lag`` (applied
offsets in Redis vs. the records on the broker) when a broker and Redis are configured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from features.settings import Settings
from serving.dashboard.data import DashboardData, Provider, audit_files, cached
from serving.dashboard.lag import EndOffsets, worker_lag
from serving.monitoring.routes import run_monitor
from serving.monitoring.sources import (
    PredictionLog,
    ReferenceFiles,
    default_lookup,
    first_of,
    registry_lookup,
)

log = logging.getLogger(__name__)

FRESHNESS_SUFFIX = "freshness_seconds"
COUNTER_SUFFIXES = ("events", "requests", "predictions")


def monitors(
    models_dir: Path | str, offline_dir: Path | str, registry: Any = None, rows: int = 5000
) -> Provider:
    """Drift of every model with a reference (registry metadata or file), newest ``rows``."""
    files = ReferenceFiles(models_dir)
    lookup = files if registry is None else default_lookup(models_dir)
    preds = PredictionLog(offline_dir)

    def read() -> list[dict]:
        names = set(files.names())
        if registry is not None:
            names |= set(registry.models())
        frame = preds.read()
        return [run_monitor(m, lookup, lambda: frame, rows=rows) for m in sorted(names)]

    return read


def experiments(models_dir: Path | str, offline_dir: Path | str, reps: int = 100) -> Provider:
    """Experiment report of every model that has a deployment spec."""
    from serving.experiments.spec import DeploymentStore

    store = DeploymentStore(models_dir)

    def read() -> list[dict]:
        from serving.experiments.report import experiment_report

        return [experiment_report(models_dir, offline_dir, n, reps=reps)
                for n in store.deployed()]

    return read


def _models_location(settings: Settings, registry: Any) -> str:
    """The served registry's folder or URI (``tessera serve --models-uri`` may differ from the
    settings): its specs, references and audit logs are the ones to show."""
    storage = getattr(registry, "storage", None)
    return getattr(storage, "uri", None) or settings.models_location


def lineage(registry: Any, limit: int = 20) -> Provider:
    """Versions from the model registry (duck-typed ``ModelRegistry``), newest first per model.

    Parent and training-set fingerprint are read from the metadata keys ``tessera train`` and
    retraining write (``parent``; ``training_set.fingerprint``), shown as "–" when absent.
    """

    def read() -> list[dict]:
        rows = []
        for name in registry.models():
            by_version: dict[str, list[str]] = {}
            for alias, v in registry.aliases(name).items():
                by_version.setdefault(str(v), []).append(alias)
            for v in reversed(registry.versions(name)[-limit:]):
                meta = registry.metadata(name, v)
                ts = meta.get("training_set")
                rows.append(
                    {
                        "model": name,
                        "version": v,
                        "parent": meta.get("parent"),
                        "created": meta.get("created"),
                        "training_set": ts.get("fingerprint") if isinstance(ts, dict) else ts,
                        "metrics": {
                            k: m
                            for k, m in (meta.get("metrics") or {}).items()
                            if k in ("auc", "logloss")
                        },
                        "aliases": sorted(by_version.get(v, [])),
                    }
                )
        return rows

    return read


def scrape(
    urls: Sequence[str], timeout_s: float = 1.0, local: bool = False
) -> tuple[Provider, Provider]:
    """(freshness, throughput) providers reading Prometheus text from ``urls``, and with
    ``local`` from this process's default registry too (the scorer's own metrics)."""
    last: dict[str, tuple[float, float]] = {}  # counter key -> (time, value)

    def families():
        if local:
            from prometheus_client import REGISTRY, generate_latest

            yield from text_string_to_metric_families(generate_latest(REGISTRY).decode())
        for url in urls:
            try:
                text = httpx.get(url, timeout=timeout_s).text
            except httpx.HTTPError as e:
                log.warning("cannot scrape %s: %r", url, e)
                continue
            yield from text_string_to_metric_families(text)

    def freshness() -> list[dict]:
        rows = []
        for fam in families():
            if fam.type == "gauge" and fam.name.endswith(FRESHNESS_SUFFIX):
                for s in fam.samples:
                    view = s.labels.get("view") or s.labels.get("feature_view") or fam.name
                    rows.append({"view": view, "age_s": s.value, "lag": None})
        return rows

    def throughput() -> list[dict]:
        rows, now = [], time.monotonic()
        for fam in families():
            if fam.type != "counter" or not fam.name.endswith(COUNTER_SUFFIXES):
                continue
            for s in fam.samples:
                if not s.name.endswith("_total"):
                    continue
                extra = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                key = f"{fam.name}{{{extra}}}" if extra else fam.name
                t0, v0 = last.get(key, (now, s.value))
                rate = (s.value - v0) / (now - t0) if now > t0 else 0.0
                last[key] = (now, s.value)
                rows.append({"name": key, "per_s": max(rate, 0.0), "total": s.value})
        return rows

    return freshness, throughput


def with_lag(
    fresh: Provider | None, lag: Callable[[], dict], topics: Callable[[], dict[str, str]]
) -> Provider:
    """Freshness rows with each view's consumer lag (``lag``: topic -> records behind;
    ``topics``: view -> its source topic). Views the worker has offsets for but no freshness
    gauge was scraped for still get a row, with the age unknown."""

    def read() -> list[dict]:
        rows = [dict(r) for r in (fresh() if fresh is not None else [])]
        view_topic = topics()
        try:
            lags = lag()
        except Exception as e:  # noqa: BLE001 - Redis or the broker down: say it in the cell
            lags, why = {}, f"n/a ({type(e).__name__})"
        else:
            why = "n/a (no applied offsets in Redis)"
        seen = {r["view"] for r in rows}
        rows += [{"view": v, "age_s": None} for v, t in sorted(view_topic.items())
                 if t in lags and v not in seen]
        for r in rows:
            topic = view_topic.get(r["view"])
            r["lag"] = lags.get(topic, why) if topic is not None else r.get("lag")
        return rows

    return read


def _view_topics(settings: Settings) -> Callable[[], dict[str, str]]:
    """view -> source topic, from the applied feature definitions (empty if none applied)."""

    def read() -> dict[str, str]:
        from features.definitions import FeatureView
        from features.errors import TesseraError
        from features.registry import load_repo

        try:
            repo = load_repo(settings)
        except (TesseraError, OSError):
            return {}
        return {n: v.source.topic for n, v in repo.views.items() if isinstance(v, FeatureView)}

    return read


def _lag_reader(settings: Settings) -> Callable[[], dict] | None:
    if not (settings.kafka_bootstrap and settings.redis_url):
        return None
    from features.kafka_config import KafkaSecurity
    from features.online.connection import connect_settings

    client = connect_settings(settings, socket_timeout=2)
    return worker_lag(client, EndOffsets(settings.kafka_bootstrap,
                                         security=KafkaSecurity.from_settings(settings)))


def from_settings(
    settings: Settings,
    metrics_urls: Sequence[str] = (),
    registry: Any = None,
    local_metrics: bool = False,
    cache_s: float | None = None,
) -> DashboardData:
    """Everything the home folder, the registry and the ``/metrics`` endpoints can show
    (``local_metrics``: also this process's own Prometheus registry, e.g. inside the scorer).
    Reports are recomputed at most every ``cache_s`` seconds (0: on every load)."""
    if cache_s is None:
        cache_s = settings.serve.dashboard_cache_s
    fresh, through = (None, None)
    if metrics_urls or local_metrics:
        fresh, through = scrape(metrics_urls, local=local_metrics)
    lag = _lag_reader(settings)
    if lag is not None:
        fresh = cached(with_lag(fresh, lag, _view_topics(settings)), min(cache_s, 2.0))
    offline = settings.offline_location  # the prediction/outcome logs live under it
    models = _models_location(settings, registry)
    return DashboardData(
        lineage=None if registry is None else lineage(registry),
        freshness=fresh,
        throughput=through,
        monitors=cached(monitors(models, offline, registry), cache_s),
        experiments=cached(experiments(models, offline), cache_s),
        audit=audit_files(models),
    )


def mount(
    app: Any, settings: Settings, registry: Any = None, metrics_urls: Sequence[str] = ()
) -> Any:
    """Add ``/ui`` and ``GET /v1/monitor/{name}`` to a FastAPI app (the scorer's: one line).

    ``serve.dashboard_metrics`` in the settings (``/metrics`` URLs, e.g. the stream worker's
    ``--metrics-port``) adds to ``metrics_urls``, so ``tessera serve`` can show worker freshness.
    """
    from serving.dashboard.routes import dashboard_router
    from serving.monitoring.routes import monitor_router

    metrics_urls = [*metrics_urls, *settings.serve.dashboard_metrics]

    app.include_router(
        dashboard_router(from_settings(settings, metrics_urls, registry, local_metrics=True))
    )
    models = _models_location(settings, registry)
    lookup = (
        default_lookup(models)
        if registry is None
        else first_of(registry_lookup(registry), ReferenceFiles(models))
    )
    app.include_router(monitor_router(lookup, PredictionLog(settings.offline_location).read))
    return app
