"""Stream benchmark: one worker process turning synthetic card transactions into features.

    .venv/bin/python bench/stream.py [--quick]

1. Throughput: publish N synthetic transactions (1M; 100k users; 4 partitions; ``--quick``: a
   tenth) to a local broker, then run one worker over the backlog with the demo repo's 3 views
   (12 windowed features: count/sum/mean/max over 1h/24h/7d). events/s = records consumed /
   (last tile write - first record polled); CPU seconds and peak RSS of the worker process.
2. Freshness: a fresh worker process on the same group, then a steady 5,000 events/s for a
   while through the SDK's producer with its defaults (acks=all, linger 20 ms); freshness =
   time from ``send`` to the Redis offset watermark covering the event (the watermark is
   written in the same MULTI/EXEC as the tiles, so that is when the feature becomes
   readable), sampled every 2 ms; also per 10 s, so a drift shows. Why not a shorter linger:
   Tansu's memory storage keeps one object per produced batch and lists them all on every
   fetch, so tiny batches (linger 2 ms) make each fetch slower as the run goes on
   (``bench/broker_delivery.py`` measures it; ``docs/streams.md``). Apache Kafka indexes
   its segments and has no such drift.
3. Skew check (1,000 random users per view against the offline log) and Redis bytes per entity.
4. Baseline: the idiomatic faust agent updating windowed faust Tables per event
   (``bench/faust_baseline.py``) on 10k events, not 100k (see the JSON's
   ``faust_baseline_events``): at ~60 events/s its rate is the same on 10k, and 100k would
   take half an hour.

Services are started here (Tansu + redis-server) unless ``KAFKA_BOOTSTRAP``/``REDIS_URL`` are
set. Writes ``bench/results/stream.json`` and prints a table.

``--cluster [--quick] [--rounds R]``: only the throughput run (1), on one Redis and on a local
3-primary Redis Cluster (``tessera.local.start_redis_cluster``) over one backlog, alternating
single and cluster R times (default 3), each run a fresh group on a flushed store with a skew
check of 1,000 users per view; medians per topology; writes
``bench/results/stream_cluster.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from kafka import KafkaProducer  # noqa: E402
from percentile import pct  # noqa: E402  (bench/ is on the path)

from features.event_schema import encode, key_of, normalize  # noqa: E402
from features.offline.event_log import EventLog  # noqa: E402
from features.online.cluster import connect, is_cluster, primaries  # noqa: E402
from features.online.layout import applied_offset, offset_key  # noqa: E402
from features.skew import skew_check  # noqa: E402
from streams.generate import transactions  # noqa: E402
from streams.producer import make_producer  # noqa: E402
from streams.topics import delete_topics, ensure_topics  # noqa: E402
from tessera.cli_streams import load_repo  # noqa: E402
from tessera.local import LocalServices, start_redis_cluster  # noqa: E402

REPO = ROOT / "examples" / "feature_repo.py"
GROUP = "bench-stream"


# runs a command and reports its peak RSS (this process's getrusage covers every worker it
# ran, so it would give the largest so far)
PEAK_RSS = [sys.executable, "-c", "import resource, subprocess, sys; rc = subprocess.call("
            "sys.argv[1:]); print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN)"
            ".ru_maxrss, file=sys.stderr); sys.exit(rc)"]


def worker_cmd(max_idle: float | None, group: str = GROUP) -> list[str]:
    cmd = [sys.executable, "-c", "from tessera.cli import main; main()", "worker",
           "--repo", str(REPO), "--group", group, "--max-records", "20000",
           "--session-timeout-ms", "6000"]
    return cmd + (["--max-idle-s", str(max_idle)] if max_idle else [])


def publish_backlog(source, bootstrap: str, n: int, users: int,
                    foreign: bool = False) -> tuple[dict[int, int], int]:
    """Send n events as fast as the producer goes; returns last offsets and valid count.
    ``foreign``: partition by CRC32 of the key, as librdkafka's default partitioner does, so
    most entities land off their home partition and the worker forwards their events."""
    prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                         batch_size=1024 * 1024, max_request_size=8 * 1024 * 1024)
    end: dict[int, int] = {}
    lock = threading.Lock()

    def done(md) -> None:
        with lock:
            if md.offset > end.get(md.partition, -1):
                end[md.partition] = md.offset

    start = time.time_ns() // 1000 - 6 * 3600 * 1_000_000  # six hours of history up to now
    valid = 0
    for e in transactions(n, start_us=start, rate=n / (6 * 3600), users=users,
                          merchants=20_000, seed=11):
        if isinstance(e, bytes):
            prod.send(source.topic, value=e).add_callback(done)
        else:
            ev = normalize(source, e)
            key = key_of(source, ev).encode()
            part = zlib.crc32(key) % source.partitions if foreign else None
            prod.send(source.topic, value=encode(source, ev), key=key,
                      partition=part).add_callback(done)
            valid += 1
    prod.flush()
    prod.close()
    return end, valid


def caught_up(client, source, end: dict[int, int], group: str = GROUP) -> bool:
    keys = [offset_key(group, source.topic, p) for p in end]
    vals = client.mget_nonatomic(keys) if is_cluster(client) else client.mget(keys)
    return all(applied_offset(v) >= end[p] for v, p in zip(vals, end, strict=True))


def freshness(source, bootstrap: str, client, rate: int, seconds: float, users: int,
              warm_s: float = 5.0) -> list[tuple[float, float]]:
    """Publish at ``rate``/s for ``warm_s + seconds``; return (seconds into the measurement,
    publish-to-readable ms) of the events sent after the first ``warm_s`` (steady state: group
    settled, caches warm)."""
    prod = make_producer(bootstrap)  # the SDK's producer, defaults and all (linger 20 ms)
    sent: list[tuple[float, int, int]] = []  # (send time, partition, offset)
    lock = threading.Lock()
    keys = [offset_key(GROUP, source.topic, p) for p in range(source.partitions)]
    samples: list[tuple[float, list[int]]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            vals = client.mget(keys)
            samples.append((time.time(), [applied_offset(v) for v in vals]))
            time.sleep(0.002)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    gen = transactions(int(rate * (seconds + warm_s)), start_us=time.time_ns() // 1000, rate=rate,
                       users=users, late_fraction=0, malformed_fraction=0, seed=99)
    t0 = time.time()
    for i, e in enumerate(gen):
        due = t0 + i / rate
        now = time.time()
        if due > now:
            time.sleep(due - now)
        ev = normalize(source, {**e, "ts": time.time_ns() // 1000 // 1000})
        ts = time.time()
        fut = prod.send(source.topic, value=encode(source, ev), key=key_of(source, ev).encode())
        fut.add_callback(lambda md, ts=ts: sent.append((ts, md.partition, md.offset)))
    prod.flush()
    deadline = time.time() + 30
    with lock:
        last = {}
        for _, p, o in sent:
            last[p] = max(last.get(p, -1), o)
    while time.time() < deadline and not (samples and all(
            samples[-1][1][p] >= o for p, o in last.items())):
        time.sleep(0.05)
    stop.set()
    poller.join()
    prod.close()
    out = []
    j = 0
    for ts, p, o in sorted(sent):
        if ts < t0 + warm_s:
            continue
        while j < len(samples) and samples[j][0] < ts:
            j += 1
        for k in range(j, len(samples)):
            if samples[k][1][p] >= o:
                out.append((ts - t0 - warm_s, (samples[k][0] - ts) * 1000))
                break
    return out


def warm_up(source, bootstrap: str, client, timeout: float = 90) -> None:
    """Wait until the new worker owns the partitions: one event per partition comes through."""
    prod = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    now = time.time_ns() // 1000
    last = {}
    for p in range(source.partitions):
        ev = {"user_id": f"warmup{p}", "merchant_id": "m", "amount": 1.0, "country": "FR",
              "ts": now}
        md = prod.send(source.topic, value=encode(source, ev), partition=p,
                       key=ev["user_id"].encode()).get(10)
        last[p] = md.offset
    prod.close()
    deadline = time.time() + timeout
    while not caught_up(client, source, last):
        if time.time() > deadline:
            raise RuntimeError("the freshness worker did not start consuming within 90 s")
        time.sleep(0.05)


def skew_mismatches(repo, client, home: Path, sample: int = 1000) -> int:
    """Online vs offline values of ``sample`` random users per view of the demo repo, now."""
    log, at = EventLog(home / "offline"), time.time_ns() // 1000
    return sum(len(skew_check(repo, v, client, log, at=at, sample=sample).mismatches)
               for v in ("user_txn_count", "user_spend", "user_spend_max"))


def bytes_per_entity(client, sample: int = 500) -> float:
    keys = []
    for k in client.scan_iter("tessera:user:*", count=1000):
        keys.append(k)
        if len(keys) >= sample:
            break
    sizes = [client.memory_usage(k, samples=0) or 0 for k in keys]
    return statistics.mean(sizes) if sizes else 0.0


def throughput(source, env: dict, client, end: dict[int, int], valid: int,
               group: str = GROUP) -> dict:
    """One worker over the published backlog: events/s, CPU and peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([*PEAK_RSS, *worker_cmd(max_idle=2, group=group)], env=env,
                         capture_output=True, text=True, timeout=1800)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0 or not out.stdout.strip():
        raise SystemExit(f"the worker failed:\n{out.stderr[-4000:]}")
    try:  # the last JSON line (faust may print terminal escapes around it)
        line = [x for x in out.stdout.splitlines() if '"first_record_at"' in x][-1]
        stats = json.loads(line[line.index("{"):line.rindex("}") + 1])
    except (ValueError, IndexError):
        raise SystemExit(f"no stats from the worker:\n{out.stdout[-2000:]}"
                         f"\n{out.stderr[-3000:]}") from None
    assert caught_up(client, source, end, group), out.stderr[-3000:]
    peak_kb = int(out.stderr.rsplit("PEAK_RSS_KB ", 1)[-1].split()[0])
    s = stats[source.topic]
    elapsed = stats["last_commit_at"] - stats["first_record_at"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        # source-topic records (forwarded ones are read twice: from the source topic and
        # from the repartition topic)
        "events_per_s": round((s["consumed"] - s["forwarded"]) / elapsed),
        "worker_elapsed_s": round(elapsed, 2),
        "cpu_s_per_million": round(cpu / (s["consumed"] - s["forwarded"]) * 1e6, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "worker_stats": s,
        "valid_events": valid,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-foreign", action="store_true",
                    help="skip the foreign-partitioner throughput run")
    ap.add_argument("--cluster", action="store_true",
                    help="throughput on one Redis and on a 3-node Redis Cluster, side by side")
    ap.add_argument("--rounds", type=int, default=3,
                    help="--cluster: runs per topology, alternating (medians reported)")
    args = ap.parse_args()
    if args.cluster:
        return cluster_main(args.quick, args.rounds)
    scale = 0.1 if args.quick else 1.0
    n = int(1_000_000 * scale)
    users = int(100_000 * scale)
    fresh_s = 10 if args.quick else 30
    repo = load_repo(REPO)
    source = repo.sources["transactions"]
    result: dict = {"scale": scale, "events": n, "users": users, "partitions": source.partitions,
                    "views": 3, "features": 12,
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp, LocalServices(Path(tmp) / "svc") as svc:
        home = Path(tmp) / "home"
        env = {**os.environ, "KAFKA_BOOTSTRAP": svc.bootstrap, "REDIS_URL": svc.redis_url,
               "TESSERA_HOME": str(home)}
        client = redis.Redis.from_url(svc.redis_url)
        ensure_topics([source], svc.bootstrap)
        t = time.time()
        end, valid = publish_backlog(source, svc.bootstrap, n, users)
        result["publish_events_per_s"] = round(n / (time.time() - t))

        result.update(throughput(source, env, client, end, valid))
        proc = subprocess.Popen(worker_cmd(None), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            warm_up(source, svc.bootstrap, client)
            timed = freshness(source, svc.bootstrap, client, 5000, fresh_s, users)
        finally:
            proc.terminate()
            proc.wait(30)
        lat = [ms for _, ms in timed]
        result.update({
            "freshness_rate_per_s": 5000,
            "freshness_events": len(timed),
            "freshness_warmup_s_excluded": 5,
            "freshness_p50_ms": round(pct(lat, 0.5), 2),
            "freshness_p99_ms": round(pct(lat, 0.99), 2),
            # the same p99 per 10 s of the measurement: a drift would show here
            "freshness_p99_ms_per_10s": [
                round(pct([ms for t, ms in timed if lo <= t < lo + 10], 0.99), 1)
                for lo in range(0, int(fresh_s), 10)],
        })

        result["skew_mismatches"] = skew_mismatches(repo, client, home)
        result["skew_sample_per_view"] = 1000
        b = bytes_per_entity(client)
        result["bytes_per_entity"] = round(b, 1)
        result["bytes_per_entity_per_view"] = round(b / 3, 1)

        if not args.no_baseline:
            base_n = 1000 if args.quick else 10_000
            out = subprocess.run(
                [sys.executable, str(ROOT / "bench" / "faust_baseline.py"), "--events",
                 str(base_n), "--bootstrap", svc.bootstrap], capture_output=True, text=True,
                timeout=1800, cwd=tmp)
            try:
                text = out.stdout + out.stderr  # faust routes prints through its logger
                base = json.loads(text[text.index('{"events_per_s"'):].split("}")[0] + "}")
                result["faust_baseline_events_per_s"] = base["events_per_s"]
                result["faust_baseline_events"] = base_n
                result["faust_baseline_note"] = (
                    f"measured on {base_n} events (not 100k): its per-event rate does not "
                    "depend on the count, and 100k would take ~30 minutes at this rate")
                result["speedup_vs_faust"] = round(
                    result["events_per_s"] / base["events_per_s"], 1)
            except (ValueError, KeyError):
                result["faust_baseline_events_per_s"] = None
                result["faust_baseline_note"] = "baseline failed: " + out.stderr[-500:]
        if not args.no_foreign:
            # the same backlog through a foreign partitioner, on a fresh topic and group, in
            # the same run: what forwarding off-home events costs
            delete_topics([source.topic, source.dlq_topic, source.repartition_topic],
                          svc.bootstrap)
            client.flushdb()
            ensure_topics([source], svc.bootstrap)
            fend, fvalid = publish_backlog(source, svc.bootstrap, n, users, foreign=True)
            fenv = {**env, "TESSERA_HOME": str(Path(tmp) / "home-foreign")}
            f = throughput(source, fenv, client, fend, fvalid, group=GROUP + "-foreign")
            result["foreign_partitioner"] = {
                "partitioner": "crc32(key) % partitions (librdkafka consistent_random)",
                **{k: v for k, v in f.items() if k != "worker_stats"},
                "forwarded": f["worker_stats"]["forwarded"],
                "events_per_s_ratio_to_sdk": round(f["events_per_s"] / result["events_per_s"],
                                                   2),
            }
            result["foreign_partitioner"]["skew_mismatches"] = skew_mismatches(
                repo, client, Path(tmp) / "home-foreign")
        delete_topics([source.topic, source.dlq_topic, source.repartition_topic],
                      svc.bootstrap)

    result["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    path = ROOT / "bench" / "results" / "stream.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    width = max(len(k) for k in result)
    for k, v in result.items():
        if not isinstance(v, dict):
            print(f"{k:<{width}}  {v}")


def cluster_main(quick: bool, rounds: int) -> None:
    """Throughput of one worker on one Redis and on a 3-primary cluster over one backlog,
    alternating (single, cluster) ``rounds`` times so machine noise hits both alike; each run
    a fresh group on a flushed store, with its own skew check; medians per topology."""
    scale = 0.1 if quick else 1.0
    n, users = int(1_000_000 * scale), int(100_000 * scale)
    repo = load_repo(REPO)
    source = repo.sources["transactions"]
    result: dict = {"scale": scale, "events": n, "users": users, "partitions": source.partitions,
                    "views": 3, "features": 12, "cluster_primaries": 3, "rounds": rounds,
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}
    runs: dict[str, list[dict]] = {"single": [], "cluster": []}
    with tempfile.TemporaryDirectory() as tmp, LocalServices(Path(tmp) / "svc") as svc:
        handle, cluster_url = start_redis_cluster(Path(tmp) / "cluster")
        try:
            ensure_topics([source], svc.bootstrap)
            end, valid = publish_backlog(source, svc.bootstrap, n, users)
            for i in range(rounds):
                for name, url in (("single", svc.redis_url), ("cluster", cluster_url)):
                    client = connect(url)
                    for node in primaries(client):
                        node.flushall()
                    home = Path(tmp) / f"home-{name}-{i}"
                    env = {**os.environ, "KAFKA_BOOTSTRAP": svc.bootstrap, "REDIS_URL": url,
                           "TESSERA_HOME": str(home)}
                    r = throughput(source, env, client, end, valid,
                                   group=f"{GROUP}-{name}-{i}")
                    runs[name].append({**{k: v for k, v in r.items() if k != "worker_stats"},
                                       "skew_mismatches": skew_mismatches(repo, client, home),
                                       "load_avg_1m": round(os.getloadavg()[0], 2)})
                    client.close()
            delete_topics([source.topic, source.dlq_topic, source.repartition_topic],
                          svc.bootstrap)
        finally:
            handle.stop()
    keys = ["events_per_s", "worker_elapsed_s", "cpu_s_per_million", "peak_rss_mb"]
    for name, rs in runs.items():
        result[name] = {
            "redis_url": "redis://..." if name == "single" else "redis+cluster://...",
            **{f"median_{k}": statistics.median(r[k] for r in rs) for k in keys},
            "skew_mismatches": sum(r["skew_mismatches"] for r in rs),
            "skew_sample_per_view_per_run": 1000,
            "runs": rs,
        }
    result["cluster_to_single_events_per_s"] = round(
        result["cluster"]["median_events_per_s"] / result["single"]["median_events_per_s"], 2)
    result["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    path = ROOT / "bench" / "results" / "stream_cluster.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'median of ' + str(rounds) + ' runs':<26}{'single':>12}{'cluster':>12}")
    for k in [*keys, "skew_mismatches"]:
        col = k if k == "skew_mismatches" else f"median_{k}"
        print(f"{k:<26}{result['single'][col]:>12}{result['cluster'][col]:>12}")
    print("events/s per run (single / cluster): " + ", ".join(
        f"{a['events_per_s']}/{b['events_per_s']}"
        for a, b in zip(runs["single"], runs["cluster"], strict=True)))
    print(f"cluster/single events/s: {result['cluster_to_single_events_per_s']}")


if __name__ == "__main__":
    main()
