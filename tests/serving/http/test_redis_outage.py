"""Redis stopped and restarted under the scorer: fast 503s with a clear message, the process
stays up, and requests succeed again once Redis is back (same port, no restart of the app)."""

import time

import pytest

from features.event_schema import us_to_iso
from serving.client import ScorerClient, ScorerError
from serving.http.main import ServeConfig, build_app
from serving.scorer.synthetic import write_repo_file
from tessera.local import free_port, start_redis, stop
from tests.serving.http.conftest import running
from tests.serving.scorer.world import make_world

pytestmark = pytest.mark.integration

def _wait_recovered(c, now, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while True:
        try:
            assert c.predict("fraud", [{"user_id": "u1"}], at=us_to_iso(now))["predictions"]
            return
        except ScorerError as e:
            assert e.status == 503 and time.monotonic() < deadline, f"no recovery: {e}"
            time.sleep(0.05)


def test_redis_down_gives_fast_503_and_recovers(tmp_path, monkeypatch):
    import redis

    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))  # the dashboard reads $TESSERA_HOME/models
    port = free_port()
    handle, url = start_redis(tmp_path / "r1", port=port)
    try:
        client = redis.Redis.from_url(url)
        _, reg, now = make_world(client, tmp_path)
        repo_file = tmp_path / "repo.py"
        write_repo_file(repo_file)
        cfg = ServeConfig(url, str(reg.storage.root), ["fraud"], str(repo_file),
                          redis_timeout_ms=100)
        with running(build_app(cfg)) as base, ScorerClient(base, timeout_s=5) as c:
            assert c.predict("fraud", [{"user_id": "u1"}], at=us_to_iso(now))["predictions"]
            ui = c.http.get("/ui/data.json").json()
            aliases = {r["version"]: r["aliases"] for r in ui["lineage"]["rows"]}
            assert aliases == {"1": ["champion"], "2": []}
            assert ui["audit"]["rows"][-1]["after"] == "1"
            assert c.http.get("/v1/monitor/fraud").status_code in (200, 404)
            # slow: Redis holds every client for 1 s; the 100 ms timeout answers 503 first
            client.execute_command("CLIENT", "PAUSE", 1000, "ALL")
            t0 = time.monotonic()
            with pytest.raises(ScorerError, match="too slow|unreachable") as e:
                c.predict("fraud", [{"user_id": "u1"}], at=us_to_iso(now))
            assert e.value.status == 503 and time.monotonic() - t0 < 0.6
            # answers again once the pause is over and the breaker's probe (every 100 ms while
            # open) got a reply; Redis ends a pause on its own cron (hz 10), up to ~0.1 s late
            time.sleep(1.0)
            _wait_recovered(c, now, within_s=2.0)
            stop(handle)
            handle = None
            for _ in range(5):
                t0 = time.monotonic()
                with pytest.raises(ScorerError, match="online store unavailable") as e:
                    c.predict("fraud", [{"user_id": "u1"}], at=us_to_iso(now))
                assert e.value.status == 503 and time.monotonic() - t0 < 1.0
            assert c.healthy()
            ready = c.ready()
            assert ready["status"] == 503 and "redis" in ready["problems"][0]
            handle, _ = start_redis(tmp_path / "r2", port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    out = c.predict("fraud", [{"user_id": "u1"}], at=us_to_iso(now))
                    break
                except ScorerError:
                    assert time.monotonic() < deadline, "scorer did not recover"
                    time.sleep(0.1)
            # the new Redis is empty: a valid answer with every feature missing, and not ready
            # (no worker wrote the store's generation) until a worker has written it
            assert out["predictions"][0]["freshness_s"]["txn_counts"] is None
            ready = c.ready()
            assert ready["status"] == 503 and "holds no data" in ready["problems"][0]
    finally:
        if handle is not None:
            stop(handle)
