"""Which scope each route needs. Deny by default: a route not listed needs ``admin``.

Public (no token): the probes and metrics an orchestrator and Prometheus scrape on a private
network, and the API description.
"""

from __future__ import annotations

PUBLIC = ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")

# (method or "*", path prefix, scope); the first match wins
RULES: tuple[tuple[str, str, str], ...] = (
    ("POST", "/v1/predict/", "predict"),
    ("POST", "/v1/features", "features:read"),
    ("GET", "/v1/catalog", "features:read"),
    ("POST", "/v1/push/", "push"),
    ("POST", "/v1/outcomes", "outcomes"),
    ("GET", "/v1/experiments/", "ui"),
    ("GET", "/v1/monitor/", "ui"),
    ("GET", "/ui", "ui"),
    ("POST", "/auth/login", ""),  # the dashboard's sign-in form: checks the token itself
)


def required_scope(method: str, path: str) -> str:
    """The scope ``method path`` needs; "" for public routes."""
    if path in PUBLIC or path.startswith("/docs/"):
        return ""
    for m, prefix, scope in RULES:
        if (m == "*" or m == method) and path.startswith(prefix):
            return scope
    return "admin"
