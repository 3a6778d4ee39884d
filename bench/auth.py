"""The cost of authentication on the predict path, measured side by side in one run.

    .venv/bin/python bench/auth.py [--quick]

1. The guard alone (``AuthGuard.check`` on a predict request's ASGI scope): with no token file
   (auth off) and with a valid bearer token among 6 live tokens; interleaved rounds, p50/p99 of
   per-call time over batches.
2. HTTP, concurrency 1 (httpx keep-alive, one entity per request) against the served app
   (``build_app``, the same app ``tessera serve`` runs) over a real Redis: rounds alternating
   auth off and auth on (token file present, every request carrying its token).
Writes ``bench/results/auth.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serving.auth.guard import AuthGuard  # noqa: E402
from serving.auth.tokens import SCOPES, TokenStore  # noqa: E402


def _scope(token: str | None) -> dict:
    headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
               (b"content-length", b"34")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {"type": "http", "method": "POST", "path": "/v1/predict/fraud", "headers": headers}


def guard_cost(rounds: int, calls: int) -> dict:
    off_home, on_home = Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp())
    store = TokenStore.at_home(on_home)
    token = [store.create(f"t{s}", [s]) for s in SCOPES][1]  # the predict token
    off, on = AuthGuard(TokenStore.at_home(off_home)), AuthGuard(TokenStore.at_home(on_home))
    per_call: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(rounds):
        for name, guard, tok in (("off", off, None), ("on", on, token)):
            scope = _scope(tok)
            for _ in range(calls // 100):
                t0 = time.perf_counter_ns()
                for _ in range(100):
                    assert guard.check(dict(scope)) is None
                per_call[name].append((time.perf_counter_ns() - t0) / 100 / 1000)
    out = {k: {"p50_us": float(np.percentile(v, 50)), "p99_us": float(np.percentile(v, 99))}
           for k, v in per_call.items()}
    out["added_p50_us"] = out["on"]["p50_us"] - out["off"]["p50_us"]
    return out


def http_cost(rounds: int, requests: int) -> dict:
    import httpx
    import redis

    from serving.http.main import ServeConfig, build_app
    from serving.scorer.synthetic import write_repo_file
    from tessera.local import start_redis, stop
    from tests.serving.http.conftest import running
    from tests.serving.scorer.world import make_world

    work = Path(tempfile.mkdtemp())
    os.environ["TESSERA_HOME"] = str(work)
    handle, url = start_redis(work / "redis")
    try:
        _, reg, _ = make_world(redis.Redis.from_url(url), work)
        repo = write_repo_file(work / "repo.py")
        app = build_app(ServeConfig(url, str(reg.storage.root), ["fraud"], str(repo)))
        store = TokenStore.at_home(work)
        lat: dict[str, list[float]] = {"off": [], "on": []}
        body = {"entities": [{"user_id": "u1"}]}
        with running(app) as base, httpx.Client(base_url=base) as c:
            token = None
            for _ in range(rounds):
                for name in ("off", "on"):
                    if name == "on" and token is None:
                        token = store.create("bench", ["predict"])
                    if name == "off" and token is not None:
                        store.revoke(store.verify(token).id)
                        token = None
                    time.sleep(1.1)  # the server re-reads the token file once a second
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    for i in range(requests):
                        t0 = time.perf_counter()
                        resp = c.post("/v1/predict/fraud", json=body, headers=headers)
                        if i >= 20:  # warm-up per round
                            lat[name].append((time.perf_counter() - t0) * 1e6)
                        assert resp.status_code == 200, resp.text
                    if name == "off":  # still open: auth really was off this round
                        assert c.post("/v1/predict/fraud", json=body).status_code == 200
        out = {k: {"p50_us": float(np.percentile(v, 50)), "p99_us": float(np.percentile(v, 99)),
                   "n": len(v)} for k, v in lat.items()}
        out["p50_ratio"] = out["on"]["p50_us"] / out["off"]["p50_us"]
        return out
    finally:
        stop(handle)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    guard = guard_cost(rounds=5 if args.quick else 20, calls=2_000 if args.quick else 20_000)
    http = http_cost(rounds=2 if args.quick else 6, requests=200 if args.quick else 1000)
    result = {"quick": args.quick, "load_avg_1m": os.getloadavg()[0], "guard": guard,
              "http_c1": http}
    out = ROOT / "bench" / "results" / ("auth_quick.json" if args.quick else "auth.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':24}{'auth off':>12}{'auth on':>12}")
    for label, d, key, fmt in (("guard p50 (us/call)", guard, "p50_us", ".2f"),
                               ("guard p99 (us/call)", guard, "p99_us", ".2f"),
                               ("HTTP c1 p50 (us)", http, "p50_us", ".0f"),
                               ("HTTP c1 p99 (us)", http, "p99_us", ".0f")):
        print(f"{label:24}{d['off'][key]:>12{fmt}}{d['on'][key]:>12{fmt}}")
    print(f"added by the check: {guard['added_p50_us']:.2f} us p50; HTTP p50 ratio "
          f"{http['p50_ratio']:.3f}  -> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
