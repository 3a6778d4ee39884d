"""The online store's one interface to Redis, and the backend of each topology.

Like Feast's ``OnlineStore`` (write a batch, read, update, teardown), one small interface
(``OnlineBackend``: ``read``/``load``/``get``/``scan``, ``commit``/``put_rings``/
``set_values``/``set_watermarks``) chosen once at start-up by ``open_backend``:

- one Redis: ``TransactionBackend`` (``single.py``), a batch in one ``WATCH``-fenced
  ``MULTI/EXEC``;
- a Redis Cluster: ``ScriptBackend`` (``scripted.py``), a fence script per key, then the
  watermarks by compare-and-set.

Both store the same bytes (``features.online.codec``, packed by ``resp.py``), read with the one
read path (``features.online.hmget.HashReads``), and keep one round trip per node touched,
following ``MOVED``/``ASK`` (``exchange.py``). The exactly-once *protocol* -- what a fence
expects, what the replay skips -- is the stream worker's (``streams.worker.checkpoint``,
``streams.worker.online``); this package is its transport. ``tests/features/online/
test_backend.py`` runs one suite against every backend.
"""

from __future__ import annotations

from typing import Any

from features.online.backend.base import Fences, OnlineBackend
from features.online.backend.scripted import ScriptBackend
from features.online.backend.single import TransactionBackend
from features.online.cluster import is_cluster

__all__ = ["Fences", "OnlineBackend", "ScriptBackend", "TransactionBackend", "open_backend",
           "backend_of"]


def open_backend(client: Any, per_key: bool | None = None, spin_us: float = 0.0
                 ) -> OnlineBackend:
    """The backend for ``client``: ``ScriptBackend`` on a cluster, ``TransactionBackend`` on
    one Redis; ``per_key=True`` takes the per-key scripts on one Redis too (benchmarks, tests
    of the cluster's protocol without a cluster)."""
    if per_key is None:
        per_key = is_cluster(client)
    if not per_key and is_cluster(client):
        raise ValueError("a Redis Cluster cannot run one transaction over a batch's keys; "
                         "leave per_key unset (or True) for a cluster client")
    return (ScriptBackend if per_key else TransactionBackend)(client, spin_us=spin_us)


def backend_of(client_or_backend: Any) -> OnlineBackend:
    """A backend as given, or the one for a client (for functions that take either)."""
    if isinstance(client_or_backend, OnlineBackend):
        return client_or_backend
    return open_backend(client_or_backend)
