"""A Redis that only speaks TLS and only to an ACL user: Debian's redis-server with a CA and a
server certificate the fixture makes with the ``openssl`` CLI in a temporary folder."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tessera.local import _wait_port, free_port, stop

USER, PASSWORD = "tessera", "s3cret-for-tests"


@dataclass(frozen=True)
class TlsRedis:
    port: int
    ca: Path
    url: str  # rediss://127.0.0.1:port/0, no credentials in it

    @property
    def env(self) -> dict[str, str]:
        """The settings a process needs to reach this Redis (as ``tessera.yaml`` or the
        environment would give them)."""
        return {"REDIS_URL": self.url, "REDIS_USERNAME": USER, "REDIS_PASSWORD": PASSWORD,
                "REDIS_TLS_CA": str(self.ca)}


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """(CA, server certificate for localhost/127.0.0.1, its key), valid for two days."""
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=tessera test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (folder / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.cnf")
    return folder / "ca.crt", folder / "server.crt", folder / "server.key"


def start_tls_redis(folder: Path) -> tuple[subprocess.Popen, TlsRedis]:
    """redis-server on a free TLS port only, ``USER``/``PASSWORD`` its only user (``default``
    is off), with certificates made under ``folder``; stop the process with ``tessera.local
    .stop``."""
    ca, cert, key = make_certificates(folder / "certs")
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
         "--tls-auth-clients", "no", "--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all",
         "--user", "default", "off", "--save", "", "--appendonly", "no", "--dir", str(folder),
         "--logfile", str(folder / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_port(port, 10, proc, "redis-server --tls-port")
    return proc, TlsRedis(port, ca, f"rediss://127.0.0.1:{port}/0")


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(CA, certificate, key) for the Kafka client mappings' TLS files."""
    return make_certificates(tmp_path_factory.mktemp("kafka-certs"))


@pytest.fixture(scope="session")
def tls_redis(tmp_path_factory) -> TlsRedis:
    if not shutil.which("redis-server") or not shutil.which("openssl"):
        pytest.skip("the transport tests need Debian's redis-server and the openssl CLI")
    proc, server = start_tls_redis(tmp_path_factory.mktemp("tls-redis"))
    yield server
    stop(proc)


@pytest.fixture
def tls_client(tls_redis):
    """A flushed client of the TLS Redis, made the way every Tessera component makes one."""
    from features.online.connection import RedisTransport, connect

    client = connect(tls_redis.url, RedisTransport(USER, PASSWORD, tls_ca=tls_redis.ca))
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def tls_cluster(tls_redis, tmp_path_factory):
    """A 3-primary Redis Cluster on TLS ports only (its bus on TLS too), the same ACL user and
    CA as ``tls_redis``; yields the ``rediss+cluster://`` URL."""
    from tessera.local import ClusterHandle, _port_free

    if not shutil.which("redis-cli"):
        pytest.skip("the TLS cluster test needs redis-cli")
    folder = tmp_path_factory.mktemp("tls-cluster")
    certs = tls_redis.ca.parent
    ports: list[int] = []
    while len(ports) < 3:  # a node also listens on port + 10000 (its cluster bus)
        p = free_port()
        if p <= 55535 and p not in ports and _port_free(p + 10000):
            ports.append(p)
    handle = ClusterHandle([])
    tls = ["--tls-cert-file", str(certs / "server.crt"), "--tls-key-file",
           str(certs / "server.key"), "--tls-ca-cert-file", str(tls_redis.ca)]
    try:
        for port in ports:
            d = folder / str(port)
            d.mkdir()
            handle.procs.append(subprocess.Popen(
                ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                 *tls, "--tls-auth-clients", "no", "--tls-cluster", "yes",
                 "--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
                 "--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all", "--user", "default",
                 "off", "--masteruser", USER, "--masterauth", PASSWORD, "--save", "",
                 "--appendonly", "no", "--dir", str(d), "--logfile", str(d / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        for port, proc in zip(ports, handle.procs, strict=True):
            _wait_port(port, 10, proc, "redis-server (TLS cluster mode)")
        cli = ["redis-cli", "--tls", "--cacert", str(tls_redis.ca), "--user", USER, "--pass",
               PASSWORD, "--no-auth-warning"]
        subprocess.run([*cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in subprocess.run(
                [*cli, "-p", str(p), "cluster", "info"], capture_output=True, text=True,
                timeout=5).stdout for p in ports):
            if time.monotonic() > deadline:
                raise RuntimeError(f"TLS Redis Cluster on ports {ports} not ok after 30 s")
            time.sleep(0.1)
        yield "rediss+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    finally:
        handle.stop()
