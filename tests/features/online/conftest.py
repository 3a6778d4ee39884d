"""Backends of the online store on every topology: one Redis and the 3-primary cluster."""

import pytest


@pytest.fixture(params=["transaction", "scripts", "cluster"])
def any_backend(request):
    """The online store's backend as the worker opens it, on each topology in turn: one Redis
    with its transaction, one Redis with the per-key scripts, and a cluster (flushed)."""
    from features.online.backend import open_backend
    from features.online.cluster import connect, primaries

    url = request.getfixturevalue("redis_cluster_url" if request.param == "cluster"
                                  else "redis_url")
    client = connect(url)
    for node in primaries(client):
        node.flushall()
    yield open_backend(client, per_key=True if request.param == "scripts" else None)
    client.close()
