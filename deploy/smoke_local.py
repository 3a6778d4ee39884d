"""Run docker-compose.yml's Tessera services as local processes, without Docker.

Where no Docker engine is available (this project's machines), this is the closest check that the
stack's commands work together: the commands and environment are read from docker-compose.yml
(hostnames and fixed ports swapped for local services on free ports), a Kafka-protocol broker and
Redis come from ``tessera.local``, synthetic events are published, and then each service's
healthcheck URL, ``/readyz``, ``/v1/features`` are checked; then docs/deploy.md's step 3 (a
training set from a labelled spine, ``tessera train --alias champion``, a scorer restart) and
predictions, ``/v1/monitor``, and which of the Grafana dashboard's metrics have samples in what
Prometheus would scrape. A smoke run (a few minutes), not a test or a benchmark.

    .venv/bin/python deploy/smoke_local.py [--events 20000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.offline.training_set import read_fingerprint, write_training_set  # noqa: E402
from tessera.local import free_port, start_broker, start_redis, stop  # noqa: E402


def local_command(command: list[str], ports: dict[str, int]) -> list[str]:
    """The compose command with its fixed ports replaced by free ones (bind hosts are kept:
    the scorer listens beyond loopback as in its container, which needs the token step)."""
    out, i = [], 0
    while i < len(command):
        word = command[i]
        if word in ("--port", "--metrics-port"):
            out += [word, str(ports[word])]
            i += 2
        else:
            out.append(word)
            i += 1
    return out


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 90) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the process exited with {proc.returncode}")
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} never answered") from None
            time.sleep(0.2)


def dashboard_metrics() -> set[str]:
    dash = json.loads((ROOT / "deploy/grafana/dashboards/tessera.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    return set(re.findall(r"\btessera_[a-z_]+", exprs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = ap.parse_args()

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    home = Path(tempfile.mkdtemp(prefix="tessera-smoke-"))
    broker, bootstrap = start_broker(home / "broker")
    redis_handle, redis_url = start_redis(home / "redis")
    ports = {"--port": free_port(), "--metrics-port": free_port()}
    hosts = {"worker": f"127.0.0.1:{ports['--metrics-port']}",
             "scorer": f"127.0.0.1:{ports['--port']}"}
    procs: dict[str, subprocess.Popen] = {}
    t0 = time.monotonic()
    try:
        def env_of(name: str) -> dict[str, str]:
            env = dict(os.environ)
            for k, v in compose[name].get("environment", {}).items():
                for host, local in hosts.items():  # http://worker:9100/... -> local port
                    v = re.sub(rf"\b{host}:\d+", local, str(v))
                env[k] = v
            env.update(KAFKA_BOOTSTRAP=bootstrap, REDIS_URL=redis_url, TESSERA_HOME=str(home))
            return env

        def run(name: str, **kw) -> subprocess.Popen:
            cmd = [sys.executable, "-m", "tessera", *local_command(compose[name]["command"], ports)]
            log = open(home / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
            return subprocess.Popen(cmd, env=env_of(name), cwd=ROOT, stdout=log,
                                    stderr=subprocess.STDOUT, **kw)

        def tessera(*cmd: str) -> None:
            out = subprocess.run([sys.executable, "-m", "tessera", *cmd], env=env_of("apply"),
                                 cwd=ROOT, capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                raise SystemExit(f"tessera {cmd[0]} failed: {out.stderr[-2000:]}")
            print(f"{cmd[0]}: {out.stdout.strip().splitlines()[-1]}")

        apply = run("apply")
        if apply.wait(120) != 0:
            raise SystemExit(f"apply failed: {(home / 'apply.log').read_text()[-2000:]}")
        print(f"apply: ok ({time.monotonic() - t0:.1f} s)")
        token = subprocess.run(
            [sys.executable, "-m", "tessera", *compose["token"]["command"]], env=env_of("token"),
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=True).stdout.strip()
        auth = {"Authorization": f"Bearer {token}"}
        print(f"token: created {token[:8]}... (the scorer may now listen beyond loopback)")
        for name in ("worker", "scorer", "sink"):
            procs[name] = run(name)

        gen = subprocess.run(
            [sys.executable, "-m", "tessera", "generate", "--rate", "0", "--count",
             str(args.events), "--repo", "examples/feature_repo.py"],
            env=env_of("apply"), cwd=ROOT, capture_output=True, text=True, timeout=300)
        print(f"generate: {gen.stdout.strip() or gen.stderr.strip()[-500:]}")

        worker_url = f"http://{hosts['worker']}/metrics"
        scorer_url = f"http://{hosts['scorer']}"
        wait_http(worker_url, procs["worker"])
        deadline, applied = time.monotonic() + 180, 0.0
        while time.monotonic() < deadline:
            text = httpx.get(worker_url, timeout=5).text
            applied = sum(float(v) for v in re.findall(
                r"^tessera_worker_applied_events_total\{[^}]*\} (\S+)$", text, flags=re.M))
            if applied >= args.events * 0.9:
                break
            time.sleep(1)
        print(f"worker: /metrics answers (its healthcheck), {applied:.0f} events applied "
              f"({time.monotonic() - t0:.1f} s since start)")

        health = wait_http(f"{scorer_url}/healthz", procs["scorer"])
        ready = httpx.get(f"{scorer_url}/readyz", timeout=5)
        print(f"scorer: /healthz {health.status_code}, /readyz {ready.status_code} "
              f"{ready.json().get('problems')}")
        feats = httpx.post(f"{scorer_url}/v1/features", timeout=5, headers=auth, json={
            "features": ["user_spend:amount_sum_24h", "user_txn_count:txn_count_24h"],
            "entities": [{"user_id": f"u{i}"} for i in range(5)]}).json()
        print(f"scorer: /v1/features {json.dumps(feats.get('values'))}")

        # docs/deploy.md step 3: a training set from a labelled spine, a champion, a restart
        spine, train_path = home / "spine.parquet", home / "train.parquet"
        rng = np.random.default_rng(3)
        n = 2_000
        pl.DataFrame({
            "user_id": [f"u{i}" for i in rng.integers(0, 2_000, n)],
            "ts": [datetime.now(UTC)] * n,
        }).write_parquet(spine)
        refs = "user_spend:amount_sum_24h,user_txn_count:txn_count_24h"
        tessera("training-set", "--spine", str(spine), "--features", refs, "--out",
                str(train_path))
        # the label a real spine would carry: a known truth of the features, plus noise
        df = pl.read_parquet(train_path)
        spend = df["user_spend__amount_sum_24h"].fill_null(0).to_numpy()
        label = (spend > np.median(spend)) ^ (rng.random(df.height) < 0.1)
        write_training_set(df.with_columns(pl.Series("is_fraud", label.astype(np.int8))),
                           train_path, read_fingerprint(train_path))
        tessera("train", "--training-set", str(train_path), "--label", "is_fraud", "--model",
                "fraud", "--alias", "champion", "--features", refs)
        procs["scorer"].terminate()  # docker compose restart scorer
        procs["scorer"].wait(30)
        procs["scorer"] = run("scorer")
        wait_http(f"{scorer_url}/healthz", procs["scorer"])
        deadline = time.monotonic() + 30
        while (ready := httpx.get(f"{scorer_url}/readyz", timeout=5)).status_code != 200:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        print(f"scorer after restart: /readyz {ready.status_code} {ready.json()}")
        scored = sum(
            httpx.post(f"{scorer_url}/v1/predict/fraud", timeout=5, headers=auth,
                       json={"entities": [{"user_id": f"u{i}"}]}).status_code == 200
            for i in range(200))
        print(f"scorer: {scored}/200 predictions answered 200")
        monitor = httpx.get(f"{scorer_url}/v1/monitor/fraud", timeout=30, headers=auth)
        print(f"scorer: /v1/monitor/fraud {monitor.status_code}")

        exposed = httpx.get(worker_url, timeout=5).text + httpx.get(
            f"{scorer_url}/metrics", timeout=5).text
        sampled = set(re.findall(r"^(tessera_[a-z_]+)", exposed, flags=re.M))
        wanted = dashboard_metrics()
        print(f"dashboard metrics with samples now: {len(wanted & sampled)}/{len(wanted)}")
        for name in sorted(wanted):
            print(f"  {'yes' if name in sampled else ' - '}  {name}")
        for name, p in procs.items():
            if p.poll() is not None:
                raise SystemExit(f"{name} exited with {p.returncode}: "
                                 f"{(home / f'{name}.log').read_text()[-2000:]}")
        print("every long-running service still up")
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        stop(broker)
        stop(redis_handle)
        if args.keep:
            print(f"logs and data: {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
