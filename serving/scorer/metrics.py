"""Prometheus metrics of the scorer. Children are bound once per (model, feature) so the
request path only pays ``inc``/``observe``; multi-process servers aggregate through
``PROMETHEUS_MULTIPROC_DIR`` (set by ``tessera serve``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

PREDICTIONS = Counter(
    "tessera_predictions_total", "Entities scored", ["model", "version"]
)
MISSING = Counter(
    "tessera_feature_missing_total",
    "Feature values absent from the online store (or the request) when scoring",
    ["model", "feature"],
)
ERRORS = Counter("tessera_request_errors_total", "Failed requests by cause", ["endpoint", "cause"])
LATENCY = Histogram(
    "tessera_predict_seconds",
    "Features + predict time per request (in process)",
    ["model"],
    buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.5),
)


class ModelMetrics:
    """Pre-bound metric children of one served model version."""

    def __init__(self, name: str, version: str, features: tuple[str, ...]) -> None:
        self.predictions = PREDICTIONS.labels(name, version)
        self.missing = [MISSING.labels(name, f) for f in features]
        self.latency = LATENCY.labels(name)
