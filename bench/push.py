"""HTTP push ingest throughput: batches of 500 events to ``POST /v1/push/{source}``.

    .venv/bin/python bench/push.py [--quick] [--events N] [--concurrency C]

Per round, a fresh Tansu broker (``tessera.local.start_broker``; its memory storage slows as
it fills), a 4-partition topic, and the push router (``serving.ingest``, as the scorer app
includes it, behind the same error handlers and body guard) in its own uvicorn process.
Clients post pre-encoded batches of 500 valid events over HTTP keep-alive (``C`` requests in
flight, one warm-up batch first) and time each request: body sent to the answer, which waits
for every broker ack (acks=all). The topic is then read back: every event counted (nothing
dropped) and checked to sit on the partition the SDK's partitioner gives its key. Side by side
on the same broker: the SDK (``streams.producer.publish``, kafka-python) publishing the same
events directly. Writes ``bench/results/push.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import orjson  # noqa: E402
from percentile import pct  # noqa: E402  (bench/ is on the path)

from features.definitions import Entity, EventSource  # noqa: E402
from features.partitioner import home_partition  # noqa: E402
from tessera.local import free_port, start_broker, stop  # noqa: E402

BATCH = 500
PARTITIONS = 4
USER = Entity("user", ["user_id"])


def source(name: str) -> EventSource:
    return EventSource(name, {"user_id": "string", "merchant_id": "string", "amount": "float",
                              "country": "string", "ts": "timestamp"}, "ts", USER,
                       partitions=PARTITIONS)


def events(n: int, users: int = 100_000) -> list[dict]:
    t0 = 1_790_000_000_000
    return [{"user_id": f"u{(i * 7919) % users}", "merchant_id": f"m{i % 997}",
             "amount": round((i % 1000) * 0.37, 2), "country": "FR", "ts": t0 + i}
            for i in range(n)]


def serve(port: int, bootstrap: str, names: list[str]) -> None:
    """The server process: the push router over ``names`` (one source per round)."""
    import uvicorn
    from fastapi import FastAPI

    from serving.http.errors import Guard, install
    from serving.ingest.push import PushService
    from serving.ingest.routes import push_router

    app = FastAPI()
    install(app)
    app.add_middleware(Guard, max_body_bytes=1 << 20)
    app.include_router(push_router(PushService({n: source(n) for n in names}, bootstrap),
                                   1 << 20))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def create_topics(bootstrap: str, names: list[str]) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    admin.close()


async def push_round(url: str, name: str, bodies: list[bytes], concurrency: int) -> dict:
    latencies: list[float] = []
    accepted = 0
    statuses: dict[int, int] = {}
    queue = list(reversed(bodies))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        await client.post(f"/v1/push/{name}", content=bodies[0])  # connect + make the producer
        accepted -= BATCH  # that warm-up batch is counted in the topic, not in the rate

        async def worker() -> None:
            nonlocal accepted
            while queue:
                body = queue.pop()
                t = time.perf_counter()
                r = await client.post(f"/v1/push/{name}", content=body,
                                      headers={"content-type": "application/json"})
                latencies.append(time.perf_counter() - t)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    accepted += r.json()["accepted"]

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    accepted += BATCH
    n = len(bodies) * BATCH
    return {"events": n, "accepted": accepted, "wall_s": round(wall, 3),
            "events_per_s": round(n / wall), "requests": len(latencies),
            "req_p50_ms": round(pct(latencies, 0.5) * 1000, 1),
            "req_p99_ms": round(pct(latencies, 0.99) * 1000, 1),
            "req_max_ms": round(max(latencies) * 1000, 1), "statuses": statuses}


def read_back(bootstrap: str, topic: str, expect: int) -> dict:
    """Every record of ``topic``: its count, and whether each sits on its SDK partition."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=3000,
                      max_partition_fetch_bytes=8 << 20)
    c.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    n = misplaced = 0
    for rec in c:
        n += 1
        if rec.partition != home_partition(rec.key.decode(), PARTITIONS):
            misplaced += 1
        if n >= expect:
            break
    c.close()
    return {"consumed": n, "misplaced": misplaced}


def sdk_round(bootstrap: str, name: str, evs: list[dict]) -> dict:
    from streams.producer import publish

    t0 = time.perf_counter()
    report = publish(source(name), evs, bootstrap)
    wall = time.perf_counter() - t0
    return {"events": len(evs), "sent": report.sent, "wall_s": round(wall, 3),
            "events_per_s": round(len(evs) / wall)}


def one_round(r: int, bodies: list[bytes], evs: list[dict], concurrency: int
              ) -> tuple[dict, dict]:
    """One round on a fresh broker (Tansu's memory storage slows as it fills) and server."""
    name, sdk_name = f"push_bench_{r}", f"push_bench_sdk_{r}"
    home = Path(tempfile.mkdtemp(prefix="tessera-push-bench-"))
    broker, bootstrap = start_broker(home / "broker")
    server = None
    try:
        create_topics(bootstrap, [name, sdk_name])
        port = free_port()
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), bootstrap,
                                   name], env={**os.environ, "PYTHONPATH": str(ROOT)})
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/openapi.json", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the push server did not start") from None
                time.sleep(0.1)
        res = asyncio.run(push_round(url, name, bodies, concurrency))
        res.update(read_back(bootstrap, name, len(evs)))
        return res, sdk_round(bootstrap, sdk_name, evs)
    finally:
        if server is not None:
            stop(server)
        stop(broker)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="50k events, 2 rounds")
    ap.add_argument("--serve", nargs=3, metavar=("PORT", "BOOTSTRAP", "NAMES"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.serve[2].split(","))
        return
    if args.quick:
        args.events, args.rounds = 50_000, 2
    n = args.events - args.events % BATCH
    evs = events(n)
    bodies = [orjson.dumps(evs[i:i + BATCH]) for i in range(0, n, BATCH)]
    http_rounds, sdk_rounds = [], []
    for r in range(args.rounds):
        h, sd = one_round(r, bodies, evs, args.concurrency)
        http_rounds.append(h)
        sdk_rounds.append(sd)

    def med(rows: list[dict], k: str) -> float:
        return sorted(r[k] for r in rows)[len(rows) // 2]

    result = {
        "batch": BATCH, "events_per_round": n, "rounds": args.rounds,
        "concurrency": args.concurrency, "partitions": PARTITIONS,
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "http": http_rounds, "sdk": sdk_rounds,
        "median": {"http_events_per_s": med(http_rounds, "events_per_s"),
                   "http_req_p50_ms": med(http_rounds, "req_p50_ms"),
                   "http_req_p99_ms": med(http_rounds, "req_p99_ms"),
                   "sdk_events_per_s": med(sdk_rounds, "events_per_s")},
    }
    result["median"]["http_vs_sdk"] = round(
        result["median"]["http_events_per_s"] / result["median"]["sdk_events_per_s"], 2)
    out = ROOT / "bench" / "results" / "push.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'round':>5} {'path':>5} {'events/s':>9} {'req p50 ms':>10} {'req p99 ms':>10} "
          f"{'consumed':>9} {'misplaced':>9}")
    for i, (h, s) in enumerate(zip(http_rounds, sdk_rounds, strict=True)):
        print(f"{i:>5} {'http':>5} {h['events_per_s']:>9} {h['req_p50_ms']:>10} "
              f"{h['req_p99_ms']:>10} {h['consumed']:>9} {h['misplaced']:>9}")
        print(f"{i:>5} {'sdk':>5} {s['events_per_s']:>9} {'':>10} {'':>10} {s['sent']:>9} "
              f"{'':>9}")
    m = result["median"]
    print(f"median: HTTP {m['http_events_per_s']} events/s (p99 {m['http_req_p99_ms']} ms per "
          f"request of {BATCH}), SDK {m['sdk_events_per_s']} events/s, ratio {m['http_vs_sdk']}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
