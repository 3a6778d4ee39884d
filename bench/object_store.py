"""Benchmark: the event log's commit and scan on a local disk vs an S3-protocol server.

    .venv/bin/python bench/object_store.py --batches 40 --rows 5000

Starts moto's standalone S3 server on localhost (what the tests use; a real bucket adds network
latency on top), then, side by side in one run, appends ``--batches`` batches of ``--rows``
events (one partition, spread over 3 days: 3 data files + 1 manifest per commit) to an event
log in a temp folder and in a bucket, and scans everything back. Then two writers race on one
manifest in the bucket (threads, one partition each) and we count lost races redone. Writes
``bench/results/object_store.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features import Entity, EventSource  # noqa: E402
from features.offline.committed_log import CommitConflict, ManifestLog  # noqa: E402
from features.offline.event_log import EventLog  # noqa: E402

DAY = 86_400_000_000
T0 = 1_772_323_200_000_000  # 2026-03-01 UTC
SOURCE = EventSource("txns", {"user_id": "string", "amount": "float", "ts": "timestamp"},
                     timestamp_field="ts", entity=Entity("user", ["user_id"]))


def batch(first: int, n: int) -> pa.Table:
    offs = list(range(first, first + n))
    return pa.table({
        "user_id": [f"u{o % 1000}" for o in offs],
        "amount": [o * 0.5 for o in offs],
        "ts": pa.array([T0 + (o % 3) * DAY + o for o in offs], pa.timestamp("us", tz="UTC")),
        "_offset": pa.array(offs, pa.int64()),
        "_ingest_ts": pa.array([T0] * n, pa.timestamp("us", tz="UTC")),
    })


def run(root: str, batches: int, rows: int) -> dict:
    log = EventLog(root)
    tables = [batch(k * rows, rows) for k in range(batches)]
    lat = []
    for t in tables:
        t0 = time.perf_counter()
        log.append(SOURCE, t, topic="txns", partition=0)
        lat.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    n = log.scan(SOURCE).collect().height
    scan_s = time.perf_counter() - t0
    assert n == batches * rows, n
    return {"append_ms_p50": statistics.median(lat), "append_ms_max": max(lat),
            "scan_s": scan_s, "rows": n}


def race(root: str, per_writer: int) -> dict:
    lost = []
    real = ManifestLog.commit

    def counting(self, manifest):
        try:
            real(self, manifest)
        except CommitConflict:
            lost.append(1)
            raise

    ManifestLog.commit = counting
    barrier = threading.Barrier(2)

    def writer(p: int) -> None:
        log = EventLog(root)
        barrier.wait()
        for k in range(per_writer):
            log.append(SOURCE, batch(k * 100, 100), topic="txns", partition=p)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=writer, args=(p,)) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ManifestLog.commit = real
    snap = EventLog(root).snapshot(SOURCE)
    return {"commits": 2 * per_writer, "generation": snap.generation, "lost_races_redone":
            len(lost), "wall_s": wall, "rows_kept": EventLog(root).scan(SOURCE).collect().height}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--race", type=int, default=20, help="commits per racing writer")
    a = ap.parse_args()
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = run(tmp, a.batches, a.rows)
        s3 = run(f"s3://{bucket}/log", a.batches, a.rows)
        raced = race(f"s3://{bucket}/race", a.race)
    finally:
        server.stop()
    out = {"batches": a.batches, "rows_per_batch": a.rows, "files_per_commit": 3,
           "server": "moto (ThreadedMotoServer, localhost)", "local": local, "s3": s3,
           "s3_vs_local_append_p50": s3["append_ms_p50"] / local["append_ms_p50"],
           "race": raced}
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "object_store.json").write_text(json.dumps(out, indent=2))
    print(f"{'':8} {'append p50 ms':>14} {'append max ms':>14} {'scan s':>8} {'rows':>8}")
    for name in ("local", "s3"):
        r = out[name]
        print(f"{name:8} {r['append_ms_p50']:14.1f} {r['append_ms_max']:14.1f} "
              f"{r['scan_s']:8.3f} {r['rows']:8d}")
    print(f"s3/local append p50: {out['s3_vs_local_append_p50']:.1f}x")
    print(f"race: {raced['commits']} commits by 2 writers, generation {raced['generation']}, "
          f"{raced['lost_races_redone']} lost races redone, {raced['rows_kept']} rows kept, "
          f"{raced['wall_s']:.2f} s")


if __name__ == "__main__":
    main()
