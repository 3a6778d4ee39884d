"""The idiomatic faust baseline for ``bench/stream.py``: an agent updating windowed faust
Tables per event (count, sum, max over 1h/24h/7d hopping windows; mean = sum / count).

    .venv/bin/python bench/faust_baseline.py --events 3000 --bootstrap HOST:PORT

Publishes ``--events`` synthetic transactions to a fresh topic, runs a faust worker over them
and prints ``{"events_per_s": ...}`` (first event to last event processed) as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import faust  # noqa: E402

from streams.generate import transactions  # noqa: E402
from tessera.local import free_port  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--events", type=int, default=3000)
ap.add_argument("--bootstrap", required=True)
args = ap.parse_args()

run = uuid.uuid4().hex[:8]
TOPIC = f"baseline-{run}"


class Txn(faust.Record, serializer="json"):
    user_id: str
    merchant_id: str
    amount: float
    country: str
    ts: str


app = faust.App(
    f"tessera-baseline-{run}",
    broker=f"kafka://{args.bootstrap}",
    store="memory://",
    datadir=tempfile.mkdtemp(prefix="faust-baseline-"),
    web_enabled=False,
    web_port=free_port(),
    topic_partitions=4,
    broker_session_timeout=10,
    broker_heartbeat_interval=1,
)
topic = app.topic(TOPIC, value_type=Txn, partitions=4)
WINDOWS = [(timedelta(hours=1), timedelta(minutes=5)), (timedelta(hours=24), timedelta(hours=2)),
           (timedelta(days=7), timedelta(hours=12))]


def windowed(name: str, default: type, size: timedelta, step: timedelta):
    return app.Table(name, default=default).hopping(size, step, expires=size).relative_to_stream()


tables = []
for size, step in WINDOWS:
    label = int(size.total_seconds())
    tables.append(tuple(windowed(f"{k}{label}", d, size, step)
                        for k, d in (("count", int), ("sum", float), ("max", float))))
state = {"n": 0, "t0": None}


@app.agent(topic)
async def features(stream):
    async for txn in stream:  # the topic is keyed by user_id, so no repartition is needed
        if state["t0"] is None:
            state["t0"] = time.time()
        for count, total, top in tables:
            count[txn.user_id] += 1
            total[txn.user_id] += txn.amount
            if txn.amount > top[txn.user_id].current():
                top[txn.user_id] = txn.amount
        state["n"] += 1
        if state["n"] >= args.events:
            rate = state["n"] / (time.time() - state["t0"])
            print(json.dumps({"events_per_s": round(rate, 1), "events": state["n"]}),
                  flush=True)
            os._exit(0)


@app.task
async def publish():
    for e in transactions(args.events, start_us=time.time_ns() // 1000, rate=1e6,
                          malformed_fraction=0, late_fraction=0, seed=5):
        await topic.send(key=e["user_id"].encode(), value=Txn(**e))


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--without-web", "-l", "warn"]
    app.main()
