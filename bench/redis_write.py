"""The worker's Redis write path alone: fenced per-key scripts on one Redis and on a cluster.

    .venv/bin/python bench/redis_write.py [--quick]

What one ``OnlineBackend.commit`` costs per entity key, with the demo repo's 9 rings per entity
(``examples/feature_repo.py``: 3 views x 3 hops) and 2,000 keys per batch (a catching-up
worker writes thousands of entities per commit), 4 partitions' watermarks fenced:

- ``fenced``: ``commit`` as the worker runs it: on a local 3-primary cluster one ``EVALSHA``
  per key checking and moving its ``~applied``, then the watermarks' compare-and-set scripts;
  on one Redis one ``MULTI/EXEC`` of ``HSET``s (with ``~applied``) fenced by ``WATCH`` of the
  watermarks;
- ``per_key_scripts_single``: the cluster's per-key scripts on one Redis (what one Redis would
  pay for the cluster's write path);
- ``unfenced_hset``: the same rings as plain pipelined ``HSET`` + ``EXPIRE`` on one Redis (what
  the write sent inside its ``MULTI/EXEC`` before the per-key fence, without the transaction):
  what the fence costs.

Rounds interleave the variants so machine noise hits them alike; medians of per-round keys/s
(client packing + the exchange; the rings are made once, outside the timing). Also Redis's own
``usec_per_call`` of ``EVALSHA`` vs ``HSET`` + ``EXPIRE`` on the single node
(``INFO commandstats``): the server-side price of the script.
Writes ``bench/results/redis_write.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.definitions import FeatureView  # noqa: E402
from features.online.backend import open_backend  # noqa: E402
from features.online.backend.exchange import connection, send  # noqa: E402
from features.online.backend.resp import hset_commands  # noqa: E402
from features.online.cluster import connect, primaries  # noqa: E402
from features.online.layout import Watermark  # noqa: E402
from streams.worker.tiles import plan_views  # noqa: E402
from tessera.cli_streams import load_repo  # noqa: E402
from tessera.local import start_redis, start_redis_cluster, stop  # noqa: E402

BATCH = 2000


def rings_for(plans, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.integers(0, 255, size=(n, p.dtype.itemsize), dtype=np.uint8) for p in plans]


class Fenced:
    """Batches written as the worker writes them: each key's ~applied and the watermarks move."""

    def __init__(self, client, fields, plans, keys: list[str], rng,
                 per_key: bool | None = None) -> None:
        self.sink = open_backend(client, per_key=per_key)
        tag = "scripts" if per_key else "worker"  # variants sharing a Redis use their own keys
        keys = [f"{k}:{tag}" for k in keys]
        self.fields, self.plans, self.keys, self.rng = fields, plans, keys, rng
        self.marks = {k: b"" for k in keys}
        self.wm = {f"bench:offsets:{tag}:{p}": Watermark() for p in range(4)}
        self.offset = 0
        self.rings = rings_for(plans, BATCH, rng)  # made once: not part of what is timed

    def round(self) -> float:
        t0 = time.perf_counter()
        for lo in range(0, len(self.keys), BATCH):
            keys = self.keys[lo:lo + BATCH]
            self.offset += 1000
            new = {k: Watermark(self.offset + i, 0, 1) for i, k in enumerate(self.wm)}
            fences = {k: (self.wm[k], new[k]) for k in self.wm}
            applied = [b"0:0:%d" % self.offset] * len(keys)
            rings = [r[:len(keys)] for r in self.rings]
            present = np.ones((len(keys), len(self.fields)), dtype=bool)
            stale = self.sink.commit(keys, self.fields, rings, present,
                                     np.zeros(len(keys), dtype=bool), 3600, fences,
                                     [self.marks[k] for k in keys], applied)
            assert stale is None, stale
            self.wm = new
            for k, a in zip(keys, applied, strict=True):
                self.marks[k] = a
        return len(self.keys) / (time.perf_counter() - t0)


class Unfenced:
    """The same rings as plain pipelined HSET + EXPIRE on one connection."""

    def __init__(self, client, fields, plans, keys: list[str], rng) -> None:
        self.client = client
        self.fields, self.plans, self.keys, self.rng = fields, plans, keys, rng
        self.rings = rings_for(plans, BATCH, rng)

    def round(self) -> float:
        t0 = time.perf_counter()
        fb = [f.encode() for f in self.fields]
        for lo in range(0, len(self.keys), BATCH):
            kb = [k.encode() for k in self.keys[lo:lo + BATCH]]
            rings = [r[:len(kb)] for r in self.rings]
            cmds = hset_commands(kb, fb, rings, np.ones((len(kb), len(fb)), dtype=bool))
            cmds += [b"*3\r\n$6\r\nEXPIRE\r\n$%d\r\n%s\r\n$4\r\n3600\r\n" % (len(k), k)
                     for k in kb]
            with connection(self.client) as conn:
                replies = send(conn, cmds, 2 * len(kb))
            assert not any(isinstance(r, Exception) for r in replies)
        return len(self.keys) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10k keys, 3 rounds (else 40k, 5)")
    args = ap.parse_args()
    n, rounds = (10_000, 3) if args.quick else (40_000, 5)
    repo = load_repo(ROOT / "examples" / "feature_repo.py")
    plans = plan_views([v for v in repo.views.values() if isinstance(v, FeatureView)
                        and v.source.name == "transactions"])
    fields = [p.layout.field for p in plans]
    rng = np.random.default_rng(0)
    keys = [f"tessera:user:u{i}" for i in range(n)]
    result: dict = {"keys": n, "batch_keys": BATCH, "rings_per_key": len(plans),
                    "ring_bytes_per_key": sum(p.dtype.itemsize for p in plans),
                    "rounds": rounds, "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        handle, url = start_redis(Path(tmp) / "single")
        chandle, curl = start_redis_cluster(Path(tmp) / "cluster")
        try:
            single, cluster = connect(url), connect(curl)
            for c in (single, cluster):
                for node in primaries(c):
                    node.flushall()
            variants = {"fenced_single": Fenced(single, fields, plans, keys, rng),
                        "per_key_scripts_single": Fenced(single, fields, plans, keys, rng,
                                                         per_key=True),
                        "fenced_cluster": Fenced(cluster, fields, plans, keys, rng),
                        "unfenced_hset_single": Unfenced(single, fields, plans, keys, rng)}
            rates: dict[str, list[float]] = {k: [] for k in variants}
            single.config_resetstat()
            for _ in range(rounds):
                for name, v in variants.items():
                    rates[name].append(v.round())
            stats = single.info("commandstats")
            result["server_usec_per_call_single"] = {
                c: stats[f"cmdstat_{c}"]["usec_per_call"] for c in ("evalsha", "hset", "expire")
                if f"cmdstat_{c}" in stats}
        finally:
            chandle.stop()
            stop(handle)
    for name, r in rates.items():
        result[f"{name}_keys_per_s"] = round(statistics.median(r))
        result[f"{name}_us_per_key"] = round(1e6 / statistics.median(r), 1)
    result["fence_cost_single"] = round(
        result["unfenced_hset_single_keys_per_s"] / result["fenced_single_keys_per_s"], 2)
    result["script_cost_single"] = round(
        result["unfenced_hset_single_keys_per_s"]
        / result["per_key_scripts_single_keys_per_s"], 2)
    result["cluster_over_single"] = round(
        result["fenced_cluster_keys_per_s"] / result["fenced_single_keys_per_s"], 2)
    result["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    dest = ROOT / "bench" / "results" / "redis_write.json"
    dest.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result.items():
        print(f"{k:36} {v}")


if __name__ == "__main__":
    main()
