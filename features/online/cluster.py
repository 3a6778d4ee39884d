"""One Redis or a Redis Cluster behind one URL, and the keys of a request grouped by node.

``redis://host:port/db`` is one Redis (``redis.Redis``); ``redis+cluster://host:port`` (any
node; several ``host:port`` separated by commas) is a Redis Cluster (``redis.RedisCluster``,
which learns the slot map from the node and follows ``MOVED``/``ASK``). The scheme says it,
not a probe: a client that silently treated a cluster as one node would die on ``MOVED`` at
its first multi-key write.

``by_node`` is what the worker and the reader use to keep one round trip per node touched:
the indices of the keys each node serves, with that node's own ``redis.Redis`` (whose pool the
callers borrow connections from). For one Redis it is one group, the client itself.

Resharding: a ``MOVED`` reply means the slot map is out of date (``refresh``); an ``ASK``
reply means the slot is being migrated and this key is already on the node named, which
answers it after ``ASKING`` -- the slot map stays as it is (``ask_target``, ``node_at``; the
callers: ``features.online.backend.exchange`` and ``features.online.hmget``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError

from features.errors import TesseraError

CLUSTER_SCHEME = "redis+cluster"


class RedisUrlError(TesseraError, ValueError):
    """A Redis URL this module cannot connect to, with what to write instead."""


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def connect(url: str, **kwargs: Any) -> redis.Redis | RedisCluster:
    """A client for ``url`` (``redis://``/``rediss://``/``unix://``: one Redis;
    ``redis+cluster://host:port[,host:port...]``: a cluster). ``kwargs`` go to the client
    (timeouts, retry)."""
    parts = urlsplit(url)
    if parts.scheme != CLUSTER_SCHEME:
        return redis.Redis.from_url(url, **kwargs)
    if parts.path not in ("", "/", "/0"):
        raise RedisUrlError(f"{url!r}: a Redis Cluster has only database 0; drop the path "
                          f"{parts.path!r}")
    netloc = parts.netloc.rsplit("@", 1)
    auth = netloc[0] if len(netloc) == 2 else ""
    nodes = []
    for hp in netloc[-1].split(","):
        host, _, port = hp.rpartition(":")
        if not host or not port.isdigit():
            raise RedisUrlError(f"{url!r}: expected redis+cluster://host:port[,host:port...], "
                              f"got node {hp!r}")
        nodes.append(ClusterNode(host, int(port)))
    if auth:
        user, _, password = auth.partition(":")
        kwargs.setdefault("username", user or None)
        kwargs.setdefault("password", password or None)
    for name, values in parse_qs(parts.query).items():
        kwargs.setdefault(name, _number(values[-1]))
    kwargs.pop("retry", None)  # RedisCluster retries redirects itself; its own retry object
    return RedisCluster(startup_nodes=nodes, **kwargs)


def _number(text: str) -> int | float | str:
    """A query-string option as redis-py takes it (``socket_timeout=0.5`` is a float)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def node_of_slot(client: RedisCluster, slot: int) -> ClusterNode:
    return client.nodes_manager.get_node_from_slot(slot)


def by_node(client: Any, keys: list[bytes] | list[str]) -> list[tuple[Any, list[int]]]:
    """``[(node client, indices of keys it serves)]``: the client itself for one Redis."""
    if not is_cluster(client):
        return [(client, list(range(len(keys))))]
    slots = client.nodes_manager.slots_cache
    groups: dict[str, tuple[Any, list[int]]] = {}
    for i, key in enumerate(keys):
        node = slots[key_slot(key.encode() if isinstance(key, str) else key)][0]
        g = groups.get(node.name)
        if g is None:
            if node.redis_connection is None:
                client.nodes_manager.initialize()
                return by_node(client, keys)
            g = groups[node.name] = (node.redis_connection, [])
        g[1].append(i)
    return list(groups.values())


def refresh(client: Any) -> None:
    """Relearn the slot map (after a ``MOVED`` reply: the cluster was resharded)."""
    if is_cluster(client):
        client.nodes_manager.initialize()


def ask_target(reply: BaseException) -> tuple[str, int] | None:
    """``(host, port)`` of an ``ASK <slot> host:port`` error reply (a slot being migrated:
    the key is already on that node), else None. redis-py parses it into ``AskError``; the
    raw hiredis reader gives a plain ``ResponseError`` with the same text."""
    if isinstance(reply, MovedError) or not isinstance(reply, redis.ResponseError):
        return None
    if isinstance(reply, AskError):
        return reply.host, reply.port
    parts = str(reply).split(" ")
    if len(parts) != 3 or parts[0] != "ASK":
        return None
    host, _, port = parts[2].rpartition(":")
    return host, int(port)


def node_at(client: RedisCluster, host: str, port: int) -> redis.Redis:
    """The ``redis.Redis`` of the node at ``host:port`` (an ``ASK`` target); the slot map is
    relearned only if the node is not in it yet (a node added to the cluster)."""
    node = client.nodes_manager.get_node(host, port)
    if node is None or node.redis_connection is None:
        client.nodes_manager.initialize()
        node = client.nodes_manager.get_node(host, port)
    if node is None or node.redis_connection is None:
        raise redis.ConnectionError(f"the cluster redirected to {host}:{port} (ASK), a node "
                                    "its slot map does not list")
    return node.redis_connection


def primaries(client: Any) -> list[Any]:
    """A ``redis.Redis`` per primary (the client itself for one Redis)."""
    if not is_cluster(client):
        return [client]
    return [n.redis_connection for n in client.get_primaries()]
