"""Shared fixtures: a real Kafka-protocol broker and a real Redis server, one per session.

To run against external servers instead, name them in ``TESSERA_TEST_KAFKA_BOOTSTRAP``,
``TESSERA_TEST_REDIS_URL`` and ``TESSERA_TEST_REDIS_CLUSTER_URL``: the tests flush those
databases, so the names say so. A user's own ``REDIS_URL``, ``KAFKA_BOOTSTRAP`` and other
Tessera settings in the environment are removed for the session and never touched.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tessera.local import start_broker, start_redis, start_redis_cluster, stop

_USER_SETTINGS = ("REDIS_URL", "KAFKA_BOOTSTRAP", "REDIS_CLUSTER_URL", "TESSERA_HOME",
                  "TESSERA_REPO", "TESSERA_PROJECT", "TESSERA_MODELS_URI", "TESSERA_OFFLINE_URI",
                  "TESSERA_REGISTRY_URI",
                  "REDIS_USERNAME", "REDIS_PASSWORD", "REDIS_TLS_CA", "REDIS_TLS_CERT",
                  "REDIS_TLS_KEY", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM",
                  "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CAFILE",
                  "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE")


def pytest_configure(config) -> None:
    for name in [*_USER_SETTINGS, *(n for n in os.environ if n.startswith("TESSERA_SERVE__"))]:
        os.environ.pop(name, None)


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def kafka_bootstrap(services_dir) -> str:
    external = os.environ.get("TESSERA_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    proc, bootstrap = start_broker(services_dir / "broker")
    yield bootstrap
    stop(proc)


@pytest.fixture(scope="session")
def redis_url(services_dir) -> str:
    external = os.environ.get("TESSERA_TEST_REDIS_URL")
    if external:
        yield external
        return
    handle, url = start_redis(services_dir / "redis")
    yield url
    stop(handle)


@pytest.fixture(scope="session")
def redis_cluster_url(services_dir) -> str:
    """A 3-primary Redis Cluster (``redis+cluster://...``) of Debian's redis-server, or
    ``TESSERA_TEST_REDIS_CLUSTER_URL``; skipped when redis-server/redis-cli are not installed."""
    import shutil

    external = os.environ.get("TESSERA_TEST_REDIS_CLUSTER_URL")
    if external:
        yield external
        return
    if not shutil.which("redis-server") or not shutil.which("redis-cli"):
        pytest.skip("Redis Cluster tests need Debian's redis-server and redis-cli on PATH")
    handle, url = start_redis_cluster(services_dir / "redis-cluster")
    yield url
    handle.stop()


@pytest.fixture(params=["single", "cluster"])
def any_redis_url(request) -> str:
    """The single-node Redis, then the 3-node cluster: a test using it runs on both."""
    return request.getfixturevalue("redis_url" if request.param == "single"
                                   else "redis_cluster_url")


@pytest.fixture
def redis_client(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


def _flushed_client(url: str):
    from features.online.cluster import connect, primaries

    client = connect(url)
    for node in primaries(client):
        node.flushall()
    yield client
    client.close()


@pytest.fixture
def any_redis_client(any_redis_url):
    """A flushed client of ``any_redis_url`` (one Redis, then the 3-node cluster)."""
    yield from _flushed_client(any_redis_url)


@pytest.fixture
def cluster_client(redis_cluster_url):
    """A flushed client of the 3-primary cluster."""
    yield from _flushed_client(redis_cluster_url)


@pytest.fixture
def unique_name() -> str:
    """A fresh name for topics/groups so tests sharing one broker never collide."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def s3_bucket():
    """A bucket on a real S3-protocol server on localhost (moto's standalone server, as s3fs's
    own tests use), with the standard AWS variables pointing at it, so pyarrow and boto3 in
    this process and in its children reach it. Yields ``(endpoint_url, bucket)``."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    bucket = f"tessera-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    yield url, bucket
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()
