"""Bounded requests (issue 16, section 3): limits per request, /healthz fast while the largest
allowed requests run, and the read-plan cache bounded however many distinct feature lists come.
"""

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from itertools import combinations

import httpx
import orjson
import pytest

from features.online.read import OnlineStore
from serving.http.app import Limits, create_app, fast_app
from serving.scorer.models import ModelSet
from serving.scorer.scorer import Scorer
from serving.scorer.synthetic import FEATURES, REPO, write_repo_file
from tessera.local import free_port
from tests.serving.http.conftest import running, wait_until_up
from tests.serving.scorer.world import make_world

pytestmark = pytest.mark.integration

LIMITS = Limits()  # the defaults tessera serve uses: 1000 entities, 256 features, 1 MiB
HEALTHZ_S = 0.050
# what these tests measure is /healthz beside the largest requests, not Redis's speed: the
# default 100 ms read timeout answered one of ~70 of them 503 when the suite beside this test
# took both cores (a clean-clone run)
PATIENT_REDIS = {"TESSERA_SERVE__REDIS_TIMEOUT_MS": "2000"}


@pytest.fixture(scope="module")
def world(tmp_path_factory, redis_url):
    import redis

    rc = redis.Redis.from_url(redis_url)
    rc.flushdb()
    tmp = tmp_path_factory.mktemp("limits")
    client, reg, now = make_world(rc, tmp)
    return client, reg, now, redis_url, tmp


@contextmanager
def served(world, **env):
    """The app as ``tessera serve`` runs it (``app_from_settings``, one uvicorn process of its
    own, so the test's client threads do not share its interpreter), with extra environment."""
    _, reg, _, redis_url, tmp = world
    port = free_port()
    repo = write_repo_file(tmp / "repo.py")
    full = {**os.environ, "REDIS_URL": redis_url, "TESSERA_HOME": str(tmp),
            "TESSERA_MODELS_URI": str(reg.storage.root), "TESSERA_SERVE__MODELS": '["fraud"]',
            "TESSERA_REPO": str(repo), **env}
    full.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "serving.http.main:app_from_settings",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=full, start_new_session=True, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/readyz", proc)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def _app(world, limits=LIMITS, max_plans=1024):
    client, reg = world[:2]
    models = ModelSet(reg)
    models.serve("fraud")
    store = OnlineStore(client, REPO, max_entities=limits.max_entities, max_plans=max_plans)
    return fast_app(create_app(Scorer(store, models), limits=limits)), store


def _largest_allowed() -> tuple[bytes, bytes]:
    ents = [{"user_id": f"u{i % 600}"} for i in range(LIMITS.max_entities)]
    refs = (FEATURES * 13)[:LIMITS.max_features]
    features = orjson.dumps({"features": refs, "entities": ents})
    predict = orjson.dumps({"entities": ents})
    assert len(features) < LIMITS.max_body_bytes
    return features, predict


def _abuse(url: str, seconds: float, clients: int = 3) -> tuple[list[float], list[int], float]:
    """``clients`` threads posting the largest allowed requests for ``seconds`` while /healthz
    is polled every 10 ms: (healthz latencies, abusive statuses, mean abusive request time)."""
    features, predict = _largest_allowed()
    stop = threading.Event()
    statuses: list[int] = []
    took: list[float] = []
    health: list[float] = []

    def abuser(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while not stop.is_set():
                path, body = ("/v1/features", features) if i % 3 else ("/v1/predict/fraud",
                                                                        predict)
                t0 = time.monotonic()
                r = c.post(path, content=body, headers={"content-type": "application/json"})
                took.append(time.monotonic() - t0)
                statuses.append(r.status_code)

    threads = [threading.Thread(target=abuser, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the abusers are in flight
    with httpx.Client(base_url=url, timeout=30) as c:
        c.get("/healthz")  # connect outside the measurement
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            assert c.get("/healthz").status_code == 200
            health.append(time.monotonic() - t0)
            time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    return health, statuses, sum(took) / max(len(took), 1)


def test_healthz_stays_fast_while_the_largest_allowed_requests_run(world):
    """Before: these requests ran on the event loop and /healthz waited for each (measured
    here with the same requests: max ~0.4 s with everything inline, see ``inline_cells``)."""
    with served(world, **PATIENT_REDIS) as url:
        features, _ = _largest_allowed()
        r = httpx.post(f"{url}/v1/features", content=features, timeout=60)
        assert r.status_code == 200 and len(r.json()["values"]) == LIMITS.max_entities
        health, statuses, mean_s = _abuse(url, seconds=3.0)
    health.sort()
    print(f"healthz under abuse: n={len(health)} p50={health[len(health) // 2] * 1e3:.1f} ms "
          f"max={health[-1] * 1e3:.1f} ms; abusive requests {len(statuses)}, "
          f"mean {mean_s * 1e3:.0f} ms")
    assert set(statuses) == {200}
    assert len(statuses) >= 3
    # p95 within 50 ms and the slowest within 250 ms: the two cores are shared with other jobs
    # (measured: max 20-27 ms at load 1.3, a few of ~180 at 50-67 ms at load 2.5; all inline:
    # p50 285-380 ms, max > 400 ms)
    assert health[int(len(health) * 0.95)] < HEALTHZ_S, health[-10:]
    assert health[-1] < 5 * HEALTHZ_S, health[-5:]


def test_inline_requests_would_stall_healthz(world):
    """The control: the same abuse with every request on the event loop (the old code path)
    stalls /healthz beyond the bound, so the test above measures something."""
    with served(world, TESSERA_SERVE__INLINE_CELLS=str(10**9), **PATIENT_REDIS) as url:
        health, statuses, mean_s = _abuse(url, seconds=2.0)
    health.sort()
    print(f"healthz, all inline: n={len(health)} p50={health[len(health) // 2] * 1e3:.1f} ms "
          f"max={health[-1] * 1e3:.1f} ms; abusive requests {len(statuses)}, "
          f"mean {mean_s * 1e3:.0f} ms")
    assert set(statuses) == {200}
    assert health[-1] > HEALTHZ_S


def test_limits_per_request(world):
    app, _ = _app(world, Limits(max_entities=10, max_features=4, max_body_bytes=4096))
    ents = [{"user_id": "u1"}]
    with running(app) as url:
        for path, body, code in (
            ("/v1/features", {"features": FEATURES[:5], "entities": ents}, "too_many_features"),
            ("/v1/features", {"features": FEATURES[:4], "entities": ents * 11},
             "too_many_entities"),
            ("/v1/predict/fraud", {"entities": ents * 11}, "too_many_entities"),
        ):
            r = httpx.post(url + path, json=body)
            assert r.status_code == 400 and r.json()["code"] == code
            assert "the limit is" in r.json()["error"]
        ok = httpx.post(f"{url}/v1/features",
                        json={"features": FEATURES[:4], "entities": ents * 10})
        assert ok.status_code == 200
        r = httpx.post(f"{url}/v1/features", content=b" " * 4097)
        assert r.status_code == 413 and r.json()["code"] == "body_too_large"


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_read_plan_cache_stays_at_its_bound(world):
    """Distinct feature lists used to add a read plan each, forever (20k lists: RSS 249 ->
    987 MB in issue 16). Now the least recently used plan goes beyond ``max_plans``."""
    app, store = _app(world, max_plans=64)
    lists = [list(c) for c in combinations(FEATURES, 3)][:600]
    with running(app) as url, httpx.Client(base_url=url) as c:
        for i, refs in enumerate(lists):
            r = c.post("/v1/features", json={"features": refs, "entities": [{"user_id": "u1"}]})
            assert r.status_code == 200
            assert len(store._plans) == min(i + 1, 64)
        # the most recently used lists are the ones kept; a hit refreshes an old one
        assert list(store._plans) == [tuple(x) for x in lists[-64:]]
        keep = lists[-64]
        c.post("/v1/features", json={"features": keep, "entities": [{"user_id": "u1"}]})
        c.post("/v1/features", json={"features": FEATURES[:2], "entities": [{"user_id": "u1"}]})
        assert tuple(keep) in store._plans and tuple(lists[-63]) not in store._plans
    # and directly, far more lists than the bound: size and memory stay flat
    direct = OnlineStore(store.client, REPO, max_plans=256)
    many = [list(c) for c in combinations(FEATURES, 4)]  # 4,845 lists
    for refs in many[:1000]:
        direct.plan(refs)
    before = _rss_mb()
    for refs in many[1000:]:
        direct.plan(refs)
    assert len(direct._plans) == 256
    assert _rss_mb() - before < 20, (before, _rss_mb())
