"""HTTP request metrics per route template and status, for every route of the scorer.

Labels are the route's template (``/v1/predict/{model}``), never the raw path, so a scan of
random URLs cannot blow up the series count (unmatched paths share ``route="unmatched"``).
Children are cached per label set: the request path pays one dict lookup, ``inc`` and
``observe``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Histogram

REQUESTS = Counter("tessera_http_requests_total", "HTTP requests answered",
                   ["route", "method", "status"])
DURATION = Histogram(
    "tessera_http_request_duration_seconds", "Time from request to the last response byte",
    ["route"], buckets=(2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.5, 2.5),
)
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe(route: str, method: str, status: int, started: float) -> None:
    """Count one answered request (``started``: its ``time.perf_counter()``)."""
    key = (route, method, status)
    pair = _children.get(key)
    if pair is None:
        pair = _children[key] = (REQUESTS.labels(route, method, str(status)),
                                 DURATION.labels(route))
    pair[0].inc()
    pair[1].observe(time.perf_counter() - started)


def route_of(scope: dict) -> str:
    """The template of the route that answered ``scope``, or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
