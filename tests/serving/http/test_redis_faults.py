"""Redis faults under 16 concurrent clients, against real redis-servers this test starts: a
hung one (SIGSTOP) and one loading its dataset. Every answer is a 503 within the timeout plus a
margin, /healthz stays fast, /readyz says why; and the readiness contract of tessera:store."""

import os
import shutil
import signal
import subprocess
import threading
import time

import httpx
import pytest
import redis

from features.online.layout import GENERATION_FIELD, REBUILDING_PREFIX, STORE_KEY
from serving.http.main import ServeConfig, build_app
from serving.scorer.synthetic import write_repo_file
from tessera.local import _wait_port, free_port, start_redis, stop
from tests.serving.http.conftest import running
from tests.serving.scorer.world import make_world

pytestmark = pytest.mark.integration

TIMEOUT_MS = 100
MARGIN_S = 0.6  # scheduling on a loaded 2-core machine; the old code took 1.5 s at p50
CLIENTS = 16


def _serve(tmp_path, url):
    client = redis.Redis.from_url(url)
    _, reg, now = make_world(client, tmp_path)
    repo_file = write_repo_file(tmp_path / "repo.py")
    cfg = ServeConfig(url, str(reg.storage.root), ["fraud"], repo_file,
                      redis_timeout_ms=TIMEOUT_MS)
    return build_app(cfg)


def _burst(base: str, rounds: int = 4) -> tuple[list[tuple[int, float, str]], list[float]]:
    """CLIENTS threads posting predictions (each its own keep-alive connection) while one more
    polls /healthz: [(status, seconds, error)] and the /healthz latencies."""
    results: list[tuple[int, float, str]] = []
    health: list[float] = []
    done = threading.Event()

    def client():
        with httpx.Client(base_url=base, timeout=5) as c:
            for _ in range(rounds):
                t0 = time.monotonic()
                r = c.post("/v1/predict/fraud", json={"entities": [{"user_id": "u1"}]})
                results.append((r.status_code, time.monotonic() - t0, r.json().get("error", "")))

    def prober():
        with httpx.Client(base_url=base, timeout=5) as c:
            while not done.is_set():
                t0 = time.monotonic()
                assert c.get("/healthz").status_code == 200
                health.append(time.monotonic() - t0)
                time.sleep(0.01)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    hp = threading.Thread(target=prober)
    hp.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    hp.join()
    return results, health


def _wait_ok(base: str, within_s: float = 15) -> None:
    deadline = time.monotonic() + within_s
    while httpx.post(f"{base}/v1/predict/fraud",
                     json={"entities": [{"user_id": "u1"}]}).status_code != 200:
        assert time.monotonic() < deadline, "the scorer did not recover"
        time.sleep(0.05)


def _assert_fast_503s(results, health, message: str, or_also: str | None = None) -> None:
    """Every answer a fast 503 naming `message` (or `or_also`, with `message` in at least one)."""
    assert len(results) == CLIENTS * 4
    slow = [s for _, s, _ in results if s > TIMEOUT_MS / 1000 + MARGIN_S]
    assert {st for st, _, _ in results} == {503} and not slow, (slow, results[:3])
    named = [message in e or (or_also is not None and or_also in e) for _, _, e in results]
    assert all(named), {e for _, _, e in results}
    assert any(message in e for _, _, e in results), {e for _, _, e in results}
    assert health and max(health) < TIMEOUT_MS / 1000 + MARGIN_S, max(health)


def test_hung_redis_gives_fast_503s_to_16_clients_and_recovers(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    handle, url = start_redis(tmp_path / "r")
    if not isinstance(handle, subprocess.Popen):
        stop(handle)
        pytest.skip("needs a redis-server process to SIGSTOP")
    try:
        with running(_serve(tmp_path, url)) as base:
            _wait_ok(base)
            os.kill(handle.pid, signal.SIGSTOP)
            try:
                results, health = _burst(base)
                took = []
                for _ in range(3):  # a /readyz that pinged would take the 100 ms timeout
                    t0 = time.monotonic()
                    ready = httpx.get(f"{base}/readyz", timeout=5)
                    took.append(time.monotonic() - t0)
                assert min(took) < 0.09, took
                assert ready.status_code == 503 and "redis" in ready.json()["problems"][0]
            finally:
                os.kill(handle.pid, signal.SIGCONT)
            _assert_fast_503s(results, health, "online store unavailable")
            _wait_ok(base)
            deadline = time.monotonic() + 5
            while httpx.get(f"{base}/readyz").status_code != 200:
                assert time.monotonic() < deadline, httpx.get(f"{base}/readyz").json()
                time.sleep(0.05)
    finally:
        stop(handle)


def test_loading_redis_gives_fast_503s_naming_it(tmp_path, monkeypatch):
    """A redis-server restarted on a dump it loads slowly (key-load-delay) answers -LOADING."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("needs redis-server")
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    port, data = free_port(), tmp_path / "r"
    data.mkdir()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
            "no", "--dir", str(data), "--logfile", str(data / "redis.log")]
    proc = subprocess.Popen(args, start_new_session=True)
    try:
        _wait_port(port, 10, proc, "redis-server")
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        app = _serve(tmp_path, url)
        pipe = client.pipeline(transaction=False)
        for i in range(40_000):  # ballast: ~8 s to load at 200 µs a key
            pipe.set(f"ballast:{i}", b"x")
        pipe.execute()
        client.save()
        proc.terminate()
        proc.wait(10)
        proc = subprocess.Popen(args + ["--key-load-delay", "200",
                                        "--loading-process-events-interval-bytes", "1024"],
                                start_new_session=True)
        _wait_port(port, 10, proc, "redis-server")
        raw = redis.Redis.from_url(url, retry=None, socket_timeout=1)
        with pytest.raises(redis.BusyLoadingError):
            raw.ping()
        with running(app) as base:
            results, health = _burst(base)
            ready = httpx.get(f"{base}/readyz").json()
            with pytest.raises(redis.BusyLoadingError):  # all of it happened while loading
                raw.ping()
            # a server busy loading can also miss the 100 ms deadline (seen in CI on a loaded
            # machine): then the answer names a timeout, still a fast 503
            _assert_fast_503s(results, health, "loading its dataset", or_also="too slow")
            assert "loading its dataset" in ready["problems"][0] or "too slow" in ready[
                "problems"][0], ready
            _wait_ok(base, within_s=60)
    finally:
        stop(proc)


def test_readyz_follows_the_store_hash(tmp_path, monkeypatch):
    """Ready only while a worker's generation is set and no rebuilding field is: after
    FLUSHALL, and while a rebuild runs, /readyz is a 503 with the reason, and back after."""
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    handle, url = start_redis(tmp_path / "r")
    client = redis.Redis.from_url(url)

    def readyz(status: int, reason: str = "", within_s: float = 3.0) -> None:
        deadline = time.monotonic() + within_s
        while True:
            t0 = time.monotonic()
            r = httpx.get(f"{base}/readyz")
            assert time.monotonic() - t0 < TIMEOUT_MS / 1000 + MARGIN_S  # background state
            if r.status_code == status and reason in " ".join(r.json()["problems"]):
                return
            assert time.monotonic() < deadline, (status, reason, r.json())
            time.sleep(0.05)

    try:
        with running(_serve(tmp_path, url)) as base:
            client.hset(STORE_KEY, GENERATION_FIELD, "w1:7")  # as a worker does with writes
            readyz(200)
            client.flushall()  # Redis lost its data
            readyz(503, "holds no data")
            client.hset(STORE_KEY, f"{REBUILDING_PREFIX}txn", '{"reason": "redis lost data"}')
            readyz(503, "rebuilding the online store from the event log: txn")
            client.hset(STORE_KEY, GENERATION_FIELD, "w1:8")  # rebuilt rings being written
            readyz(503, "rebuilding")
            client.hdel(STORE_KEY, f"{REBUILDING_PREFIX}txn")
            readyz(200)
    finally:
        stop(handle)
