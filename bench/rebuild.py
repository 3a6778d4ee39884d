"""Benchmark: rebuilding the online store from the offline event log.

    .venv/bin/python bench/rebuild.py [--quick] [--scenario rebuild]

Scenario ``rebuild`` (the only one so far): an event log of 5M card transactions (``--quick``:
a tenth) for 100k users over 8 days, 4 partitions with Kafka-like offsets, ~5 % of events up
to an hour out of order and 0.2 % ten days late (beyond the horizon), deterministic (seed 42);
3 views (count; sum/mean/stddev; min/max/last over 1h/24h/7d: 21 features, 9 rings per user).
An empty Redis (started here unless ``REDIS_URL`` is set) is rebuilt with
``streams.worker.rebuild.rebuild`` in a child process, so wall time, CPU and peak RSS are that
run's alone; then a sample of users is read back through ``OnlineStore`` just after the newest
event and every value compared with the brute-force reference (``tests/reference.py``).

Scenarios are functions ``(args, work dir, redis URL) -> dict`` in ``SCENARIOS``; each writes
its own key in ``bench/results/rebuild.json``. A second one ("Redis flushed under a live
stream") is meant to be added next to ``rebuild``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features import Aggregate, Entity, EventSource, FeatureRepo, FeatureView  # noqa: E402
from features.offline.event_log import EventLog  # noqa: E402
from features.semantics.windows import DAY, HOUR  # noqa: E402

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in µs
SPAN = 8 * DAY
NOW = T0 + SPAN  # the rebuild's "now": after every event
WINDOWS = ["1h", "24h", "7d"]
PARTITIONS = 4

user = Entity("user", keys=["user_id"])
transactions = EventSource(
    name="transactions", topic="transactions", timestamp_field="ts", entity=user,
    partitions=PARTITIONS,
    schema={"user_id": "string", "merchant_id": "string", "amount": "float",
            "country": "string", "ts": "timestamp"},
)
VIEWS = [
    FeatureView("counts", transactions, [Aggregate("count", WINDOWS)]),
    FeatureView("spend", transactions, [Aggregate(fn, WINDOWS, field="amount")
                                        for fn in ("sum", "mean", "stddev")]),
    FeatureView("extremes", transactions, [Aggregate(fn, WINDOWS, field="amount")
                                           for fn in ("min", "max", "last")]),
]


def generate(log_dir: Path, scale: float, seed: int = 42) -> dict:
    """The event log; returns sizes and the events (numpy) for the reference."""
    rng = np.random.default_rng(seed)
    n_ev, n_users = int(5_000_000 * scale), int(100_000 * scale)
    weights = rng.lognormal(0, 1, n_users)
    weights /= weights.sum()
    users = rng.choice(n_users, size=n_ev, p=weights)
    ts = T0 + rng.integers(0, SPAN, n_ev)
    order = np.argsort(ts, kind="stable")  # log order follows event time, roughly
    users, ts = users[order], ts[order]
    ts = ts - (rng.random(n_ev) < 0.05) * rng.integers(0, HOUR, n_ev)  # out of order
    ts = np.where(rng.random(n_ev) < 0.002, ts - 10 * DAY, ts)  # late beyond the horizon
    ts = np.minimum(ts, NOW - 1)
    amount = np.round(rng.lognormal(3, 1.2, n_ev), 2)
    ids = np.char.add("u", np.char.zfill(users.astype(str), 6))
    log = EventLog(log_dir)
    part = users % PARTITIONS
    offsets = np.empty(n_ev, dtype=np.int64)
    for p in range(PARTITIONS):
        m = part == p
        k = int(m.sum())
        offsets[m] = np.arange(k)
        log.append(transactions, pa.table({
            "user_id": ids[m], "merchant_id": np.full(k, "m1"), "amount": amount[m],
            "country": np.full(k, "FR"), "ts": pa.array(ts[m], pa.timestamp("us", tz="UTC")),
            "_offset": offsets[m],
            "_ingest_ts": pa.array(np.maximum.accumulate(ts[m]), pa.timestamp("us", tz="UTC")),
        }), topic=transactions.topic, partition=p)
    return {"events": n_ev, "users": n_users, "users_with_events": int(len(np.unique(users))),
            "arrays": (users, ts, offsets, amount)}


def child(log_dir: Path, redis_url: str) -> None:
    """The timed part, alone in its process."""
    import redis

    from streams.worker.rebuild import rebuild

    client = redis.Redis.from_url(redis_url, socket_timeout=60)
    t0 = time.perf_counter()
    report = rebuild(client, transactions, VIEWS, EventLog(log_dir), now_us=NOW)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall_s": wall, "read_s": report.read_s, "entities": report.entities,
                      "events_folded": report.events, "keys_written": report.keys_written,
                      "cpu_s": usage.ru_utime + usage.ru_stime,
                      "peak_rss_mb": usage.ru_maxrss / 1024}))


def reference_check(client, arrays, sample: int, seed: int = 7) -> dict:
    """A sample of users read online at NOW + 1 µs against the brute force over their events."""
    from features.online.read import OnlineStore
    from tests.reference import brute_force, close

    users, ts, offsets, amount = arrays
    present = np.unique(users)
    rng = random.Random(seed)
    picked = sorted(rng.sample(present.tolist(), min(sample, len(present))))
    # the heaviest user too: the most events per tile
    picked = sorted(set(picked) | {int(np.bincount(users).argmax())})
    repo = FeatureRepo.of(VIEWS)
    refs = [f"{v.name}:{f}" for v in VIEWS for f in v.feature_names]
    t = NOW + 1
    store = OnlineStore(client, repo)
    mismatches, compared = [], 0
    order = np.argsort(users, kind="stable")
    bounds = np.searchsorted(users[order], picked + [int(users.max()) + 1])
    for i, u in enumerate(picked):
        ix = order[bounds[i]:np.searchsorted(users[order], u, side="right")]
        got = store.get_features(refs, [{"user_id": f"u{u:06d}"}], at_us=t).values[0]
        for ref, value in zip(refs, got, strict=True):
            vname, fname = ref.split(":")
            f = repo.views[vname].feature(fname)
            evs = list(zip(ts[ix].tolist(), offsets[ix].tolist(),
                           (amount[ix] if f.field else np.ones(len(ix))).tolist(), strict=True))
            want = brute_force(evs, f.fn, t, f.window, f.hop)
            compared += 1
            if not close(value, want):
                mismatches.append({"user": u, "feature": ref, "online": value, "want": want})
    return {"reference_users": len(picked), "reference_values": compared,
            "mismatches": len(mismatches), "mismatch_examples": mismatches[:10]}


def scenario_rebuild(args, work: Path, redis_url: str) -> dict:
    import redis

    scale = 0.1 if args.quick else 1.0
    t0 = time.perf_counter()
    gen = generate(work / "offline", scale)
    arrays = gen.pop("arrays")
    generate_s = time.perf_counter() - t0
    client = redis.Redis.from_url(redis_url, socket_timeout=60)
    client.flushdb()
    load_before = os.getloadavg()[0]
    proc = subprocess.run([sys.executable, __file__, "--child", str(work / "offline"),
                           "--redis", redis_url], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"rebuild failed:\n{proc.stderr[-4000:]}")
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    mem = client.info("memory")["used_memory"]
    ref = reference_check(client, arrays, args.sample)
    return {
        "scale": scale, **gen, "views": len(VIEWS), "rings_per_entity": 9,
        "features": sum(len(v.features) for v in VIEWS), "generate_s": round(generate_s, 2),
        "wall_s": round(run["wall_s"], 2), "read_s": round(run["read_s"], 2),
        "fold_and_write_s": round(run["wall_s"] - run["read_s"], 2),
        "cpu_s": round(run["cpu_s"], 2), "peak_rss_mb": round(run["peak_rss_mb"], 1),
        "entities": run["entities"], "events_folded": run["events_folded"],
        "keys_written": run["keys_written"],
        "entities_per_s": round(run["entities"] / run["wall_s"]),
        "events_per_s": round(run["events_folded"] / run["wall_s"]),
        "redis_used_memory_mb": round(mem / 2**20, 1),
        "load_avg_1m_before": round(load_before, 2), **ref,
    }


SCENARIOS: dict[str, Callable[[argparse.Namespace, Path, str], dict]] = {
    "rebuild": scenario_rebuild,
}
TABLE = ["scale", "events", "entities", "events_folded", "wall_s", "read_s",
         "fold_and_write_s", "cpu_s", "peak_rss_mb", "entities_per_s", "events_per_s",
         "redis_used_memory_mb", "load_avg_1m_before", "reference_values", "mismatches"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the size")
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    ap.add_argument("--sample", type=int, default=300, help="users checked by the reference")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--redis", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.redis)
        return
    from tessera.local import start_redis, stop

    out = ROOT / "bench" / "results" / "rebuild.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    with tempfile.TemporaryDirectory(prefix="tessera-rebuild-") as tmp:
        work = Path(tmp)
        handle, url = (None, os.environ["REDIS_URL"]) if os.environ.get("REDIS_URL") else (
            start_redis(work / "redis"))
        try:
            for name in args.scenario or list(SCENARIOS):
                res = SCENARIOS[name](args, work / name, url)
                res.update({"machine": "2 shared cores",
                            "command": f"bench/rebuild.py{' --quick' if args.quick else ''}"})
                results[name + ("_quick" if args.quick else "")] = res
                print(f"== {name}{' (quick)' if args.quick else ''}")
                for k in TABLE:
                    if k in res:
                        print(f"{k:24} {res[k]}")
                if res.get("mismatches"):
                    print("MISMATCHES:", json.dumps(res["mismatch_examples"], indent=1))
        finally:
            if handle is not None:
                stop(handle)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    if any(r.get("mismatches") for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
