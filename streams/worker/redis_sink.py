"""The worker's online store: the backend of its Redis, and its client's timeouts.

What the worker writes and how (one ``WATCH``-fenced ``MULTI/EXEC`` on one Redis, a fence
script per key on a cluster, the bytes, the redirects) lives behind
``features.online.backend``; the exactly-once protocol it serves stays here in
``streams.worker`` (``checkpoint.py``, ``online.py``).
"""

from __future__ import annotations

from typing import Any

from features.online.backend import OnlineBackend, open_backend
from features.online.connection import RedisTransport
from features.online.connection import connect as connect_url

__all__ = ["OnlineBackend", "RedisSink", "connect"]


def RedisSink(client: Any, per_key: bool | None = None) -> OnlineBackend:  # noqa: N802
    """The worker's sink for ``client`` (``features.online.backend.open_backend``)."""
    return open_backend(client, per_key=per_key)


def connect(url: str, transport: RedisTransport | None = None) -> Any:
    """The worker's client: one Redis (``redis://``, ``rediss://``) or a cluster
    (``redis+cluster://``), with ``transport``'s credentials and TLS files."""
    return connect_url(url, transport, socket_timeout=30, socket_connect_timeout=5)
