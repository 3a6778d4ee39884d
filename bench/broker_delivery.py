"""Why the stream benchmark publishes with a 20 ms linger: delivery on the dev broker over time.

    .venv/bin/python bench/broker_delivery.py [--quick]

For each producer linger (2 ms, then the SDK's 20 ms), a fresh Tansu broker, a 4-partition
topic, a kafka-python producer at a steady 5,000 events/s (acks=all) and a bare aiokafka
consumer polling with ``getmany`` as the worker does (fetch wait 20 ms). Reports, per 10 s of
the run, the record age when polled (now - the producer's timestamp) p50/p99 and the broker's
CPU use. No Tessera code runs after the producer: this is the floor under the worker's
freshness. Tansu's memory storage lists every stored batch of a partition on each fetch, so
many small batches make each fetch dearer as the run goes on. Writes
``bench/results/broker_delivery.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer  # noqa: E402
from kafka import KafkaProducer  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402
from percentile import pct  # noqa: E402  (bench/ is on the path)

from tessera.local import start_broker, stop  # noqa: E402

RATE = 5000
WINDOW_S = 10


def broker_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def publish(bootstrap: str, linger_ms: int, stop_at: float) -> None:
    prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms)
    t0 = time.time()
    i = 0
    while time.time() < stop_at:
        wait = t0 + i / RATE - time.time()
        if wait > 0:
            time.sleep(wait)
        prod.send("delivery", value=b"x" * 120, key=str(i % 1000).encode())
        i += 1
    prod.flush()
    prod.close()


async def consume(bootstrap: str, pid: int, seconds: float, linger_ms: int) -> list[dict]:
    c = AIOKafkaConsumer("delivery", bootstrap_servers=bootstrap, group_id="delivery",
                         auto_offset_reset="latest", fetch_max_wait_ms=20,
                         enable_auto_commit=False, check_crcs=False)
    await c.start()
    while not c.assignment():
        await c.getmany(timeout_ms=100)
    start = time.time()
    threading.Thread(target=publish, args=(bootstrap, linger_ms, start + seconds),
                     daemon=True).start()
    windows: list[dict] = []
    ages: list[float] = []
    polls = 0
    cpu0 = broker_cpu_s(pid)
    edge = start + WINDOW_S
    while time.time() < start + seconds:
        got = await c.getmany(timeout_ms=200, max_records=20_000)
        now_ms = time.time() * 1000
        polls += 1
        ages.extend(now_ms - r.timestamp for recs in got.values() for r in recs)
        if time.time() >= edge:
            cpu = broker_cpu_s(pid)
            windows.append({"from_s": round(edge - start - WINDOW_S), "records": len(ages),
                            "polls_per_s": round(polls / WINDOW_S, 1),
                            "age_p50_ms": round(pct(ages, 0.5), 1),
                            "age_p99_ms": round(pct(ages, 0.99), 1),
                            "broker_cpu_cores": round((cpu - cpu0) / WINDOW_S, 2)})
            ages, polls, cpu0, edge = [], 0, cpu, edge + WINDOW_S
    await c.stop()
    return windows


def run(linger_ms: int, seconds: float) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        proc, bootstrap = start_broker(Path(tmp))
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            admin.create_topics([NewTopic("delivery", 4, 1)])
            admin.close()
            return asyncio.run(consume(bootstrap, proc.pid, seconds, linger_ms))
        finally:
            stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    seconds = 20 if args.quick else 60
    result: dict = {"rate_per_s": RATE, "partitions": 4, "seconds": seconds,
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    for linger in (2, 20):
        result[f"linger_{linger}ms"] = run(linger, seconds)
    result["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    (ROOT / "bench" / "results" / "broker_delivery.json").write_text(
        json.dumps(result, indent=2) + "\n")
    print(f"{'linger':>6} {'from s':>6} {'polls/s':>8} {'age p50':>8} {'age p99':>8} "
          f"{'broker cores':>12}")
    for linger in (2, 20):
        for w in result[f"linger_{linger}ms"]:
            print(f"{linger:>6} {w['from_s']:>6} {w['polls_per_s']:>8} {w['age_p50_ms']:>8} "
                  f"{w['age_p99_ms']:>8} {w['broker_cpu_cores']:>12}")


if __name__ == "__main__":
    main()
