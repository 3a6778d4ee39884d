"""Benchmark: rebuilding the online store from the offline event log.

    .venv/bin/python bench/rebuild.py [--quick] [--scenario rebuild|live]

Scenario ``rebuild``: an event log of 5M card transactions (``--quick``:
a tenth) for 100k users over 8 days, 4 partitions with Kafka-like offsets, ~5 % of events up
to an hour out of order and 0.2 % ten days late (beyond the horizon), deterministic (seed 42);
3 views (count; sum/mean/stddev; min/max/last over 1h/24h/7d: 21 features, 9 rings per user).
An empty Redis (started here unless ``REDIS_URL`` is set) is rebuilt with
``streams.worker.rebuild.rebuild`` in a child process, so wall time, CPU and peak RSS are that
run's alone; then a sample of users is read back through ``OnlineStore`` just after the newest
event and every value compared with the brute-force reference (``tests/reference.py``).

Scenario ``live``: Redis flushed under a steady 5k events/s stream. A local broker (unless
``KAFKA_BOOTSTRAP`` is set) gets 5M events (``--quick``: 500k) of 100k users (10k), event
times over the last 7 days + 2 h (5 % up to an hour out of order), the same 3 views, each
event on its entity's partition as the SDK partitions (murmur2), produced with confluent-kafka;
one ``tessera worker`` subprocess consumes them all (so the event log holds them), then a
steady 5,000 events/s of the same users (event time = send time) runs for the rest of the run.
After ``--steady-s`` (10 s) of it: ``FLUSHALL``. ``HGETALL tessera:store`` and the offset
watermarks are polled every 20 ms (``store_readiness``): ``not_ready_s`` and ``rebuilt_s`` are
seconds from the FLUSHALL to the first poll saying not ready and then ready again;
``entities_per_s`` is the worker's own figure (entities rebuilt / seconds, from its log line;
also its metrics ``tessera_worker_store_rebuilds_total`` / ``rebuilt_entities_total``). Also
how far the stream fell behind (send -> covered by the watermark) and when it caught up. After
another ``--steady-s`` the stream stops; once the watermarks hold every produced offset, 300
users (+ the busiest of the log and of the stream) are read just after the newest event and
compared with the brute force over every event produced, and the log is checked to hold each
offset once. Goal: ready again within 30 s. This scenario ``FLUSHALL``s the Redis it is given.

Scenarios are functions ``(args, work dir, redis URL) -> dict`` in ``SCENARIOS``; each writes
its own key in ``bench/results/rebuild.json`` (``<name>_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
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

sys.path.insert(0, str(ROOT / "bench"))
from percentile import pct  # noqa: E402

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


def reference_check(client, arrays, sample: int, seed: int = 7, *, views=None,
                    t: int | None = None, extra: tuple[int, ...] = ()) -> dict:
    """A sample of users (plus ``extra``) read online at ``t`` (default NOW + 1 µs) against the
    brute force over their events."""
    from features.online.read import OnlineStore
    from tests.reference import brute_force, close

    users, ts, offsets, amount = arrays
    views = VIEWS if views is None else views
    present = np.unique(users)
    rng = random.Random(seed)
    picked = sorted(rng.sample(present.tolist(), min(sample, len(present))))
    # the heaviest user too: the most events per tile
    picked = sorted(set(picked) | {int(np.bincount(users).argmax())} | set(extra))
    repo = FeatureRepo.of(views)
    refs = [f"{v.name}:{f}" for v in views for f in v.feature_names]
    t = NOW + 1 if t is None else t
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


# -- scenario "live": Redis flushed under a live stream ---------------------------------------

# The worker loads definitions from a repo file: the same source and views as above.
LIVE_REPO = '''
from features import Aggregate, Entity, EventSource, FeatureView

W = ["1h", "24h", "7d"]
user = Entity("user", keys=["user_id"])
transactions = EventSource(
    name="transactions", topic="transactions", timestamp_field="ts", entity=user,
    partitions=4,
    schema={"user_id": "string", "merchant_id": "string", "amount": "float",
            "country": "string", "ts": "timestamp"},
)
counts = FeatureView("counts", transactions, [Aggregate("count", W)])
spend = FeatureView("spend", transactions, [Aggregate(fn, W, field="amount")
                                            for fn in ("sum", "mean", "stddev")])
extremes = FeatureView("extremes", transactions, [Aggregate(fn, W, field="amount")
                                                  for fn in ("min", "max", "last")])
'''
LIVE_GROUP = "bench-rebuild-live"
LIVE_RATE = 5000  # events/s of the steady stream
POLL_S = 0.02  # how often tessera:store and the watermarks are read


def _value(uid: str, amount: float, iso: str) -> bytes:
    return (f'{{"user_id":"{uid}","merchant_id":"m1","amount":{amount!r},"country":"FR",'
            f'"ts":"{iso}Z"}}').encode()


def _iso(ts_us: np.ndarray) -> list[str]:
    return np.datetime_as_string(ts_us.astype("datetime64[us]"), unit="us").tolist()


def _kafka_producer(bootstrap: str, linger_ms: int, **conf):
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": linger_ms,
                     "partitioner": "murmur2_random", "enable.idempotence": False,
                     "message.max.bytes": 8 * 1024 * 1024, **conf})


def _produce_backlog(bootstrap: str, topic: str, ids: list[str], users, ts, amount,
                     part) -> dict:
    """Every event to its entity's partition (the SDK's murmur2), as fast as librdkafka goes;
    checks that each partition's delivery reports come back at offsets 0, 1, 2, ... in send
    order, so ``offsets`` computed here are the broker's."""
    prod = _kafka_producer(bootstrap, 50, **{"batch.size": 1024 * 1024,
                                             "queue.buffering.max.messages": 2_000_000,
                                             "queue.buffering.max.kbytes": 2 * 1024 * 1024})
    nparts = int(part.max()) + 1
    expect, stats = [0] * nparts, {"errors": 0, "out_of_order": 0}

    def done(err, msg) -> None:
        if err is not None:
            stats["errors"] += 1
            return
        p = msg.partition()
        if msg.offset() != expect[p]:
            stats["out_of_order"] += 1
        expect[p] = msg.offset() + 1

    keys = [i.encode() for i in ids]
    chunk = 100_000
    for a in range(0, len(users), chunk):
        u = users[a:a + chunk].tolist()
        am = amount[a:a + chunk].tolist()
        pp = part[a:a + chunk].tolist()
        for uu, x, iso, p in zip(u, am, _iso(ts[a:a + chunk]), pp, strict=True):
            v = _value(ids[uu], x, iso)
            while True:
                try:
                    prod.produce(topic, value=v, key=keys[uu], partition=p, on_delivery=done)
                    break
                except BufferError:
                    prod.poll(0.05)
        prod.poll(0)
    left = prod.flush(120)
    stats["undelivered"] = left
    stats["end"] = {p: expect[p] - 1 for p in range(nparts)}
    return stats


class _Steady(threading.Thread):
    """``rate`` events/s of the same users until stopped, event time = send time; every
    delivery report kept (send time, user index, ts, amount, partition, offset)."""

    def __init__(self, bootstrap: str, topic: str, ids: list[str], weights, upart,
                 rate: int, seed: int = 43) -> None:
        super().__init__(daemon=True)
        self.topic, self.ids, self.rate, self.upart = topic, ids, rate, upart
        rng = np.random.default_rng(seed)
        n = rate * 900
        self.users = rng.choice(len(ids), size=n, p=weights).tolist()
        self.amounts = np.round(rng.lognormal(3, 1.2, n), 2).tolist()
        self.prod = _kafka_producer(bootstrap, 20)
        self.delivered: list[tuple[float, int, int, float, int, int]] = []
        self.errors = 0
        self.wrong_partition = 0
        self.sent = 0
        self.stopping = threading.Event()
        self.t0 = self.t1 = 0.0

    def run(self) -> None:
        from features.event_schema import us_to_iso

        self.t0 = time.time()
        while not self.stopping.is_set() and self.sent < len(self.users):
            due = int((time.time() - self.t0) * self.rate)
            while self.sent < due:
                i = self.sent
                u, x = self.users[i], self.amounts[i]
                t_send = time.time()
                ts = time.time_ns() // 1000
                iso = us_to_iso(ts)[:-1]

                def done(err, msg, t_send=t_send, u=u, ts=ts, x=x) -> None:
                    if err is not None:
                        self.errors += 1
                        return
                    if msg.partition() != self.upart[u]:
                        self.wrong_partition += 1
                    self.delivered.append((t_send, u, ts, x, msg.partition(), msg.offset()))

                self.prod.produce(self.topic, value=_value(self.ids[u], x, iso),
                                  key=self.ids[u].encode(), on_delivery=done)
                self.sent += 1
            self.prod.poll(0)
            time.sleep(0.005)
        self.t1 = time.time()
        self.prod.flush(60)
        self.prod = None  # librdkafka's threads go now, not when the broker stops

    def end_offsets(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for *_, p, o in self.delivered:
            out[p] = max(out.get(p, -1), o)
        return out


class _Poller(threading.Thread):
    """Every POLL_S: ``HGETALL tessera:store`` and the watermarks, in one round trip."""

    def __init__(self, redis_url: str, keys: list[str]) -> None:
        import redis

        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(redis_url, socket_timeout=60)
        self.keys = keys
        self.samples: list[tuple[float, bool, str, list[int]]] = []  # (t, ready, why, offsets)
        self.stopping = threading.Event()

    def run(self) -> None:
        from features.online.layout import STORE_KEY, applied_offset, store_readiness

        while not self.stopping.is_set():
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(STORE_KEY)
            pipe.mget(self.keys)
            try:
                fields, marks = pipe.execute()
            except Exception:  # noqa: BLE001 - a slow reply while Redis flushes: poll again
                continue
            ready, why = store_readiness(fields)
            kind = "ok" if ready else ("rebuilding" if why.startswith("rebuilding") else "empty")
            self.samples.append((time.time(), ready, kind, [applied_offset(m) for m in marks]))
            time.sleep(POLL_S)


def _metrics(port: int) -> dict[str, float]:
    import urllib.request

    wanted = ("tessera_worker_store_rebuilds_total", "tessera_worker_rebuilt_entities_total",
              "tessera_worker_applied_events_total", "tessera_worker_consumed_events_total",
              "tessera_worker_replayed_events_total", "tessera_worker_late_events_total",
              "tessera_worker_dead_letter_events_total", "tessera_worker_fence_retries_total",
              "process_resident_memory_bytes")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in wanted:
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _wait(cond, timeout: float, what: str, proc=None, every: float = 0.1) -> float:
    t0 = time.time()
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the worker exited (code {proc.returncode}) while waiting for "
                               f"{what}")
        if time.time() - t0 > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)
    return time.time() - t0


def _freshness(delivered, samples, nparts: int) -> list[tuple[float, float]]:
    """(send time, seconds until the watermark covered the event) per delivered event: the
    first poll at or after the send whose watermark reaches its offset."""
    times = [s[0] for s in samples]
    out = []
    for p in range(nparts):
        evs = sorted((t, o) for t, _, _, _, pp, o in delivered if pp == p)
        j = 0
        for t, o in evs:
            j = max(j, bisect.bisect_left(times, t))
            while j < len(samples) and samples[j][3][p] < o:
                j += 1
            if j < len(samples):
                out.append((t, samples[j][0] - t))
    return sorted(out)


def scenario_live(args, work: Path, redis_url: str) -> dict:
    """Redis flushed under a steady 5k events/s stream (see the module docstring)."""
    import redis

    from features.offline.event_log import EventLog
    from features.online.layout import offset_key
    from streams.topics import ensure_topics
    from tessera.cli_streams import load_repo
    from tessera.local import free_port, start_broker, stop

    scale = 0.1 if args.quick else 1.0
    n_ev, n_users = int(5_000_000 * scale), int(100_000 * scale)
    work.mkdir(parents=True, exist_ok=True)
    repo_path = work / "repo.py"
    repo_path.write_text(LIVE_REPO)
    repo = load_repo(repo_path)
    source = repo.sources["transactions"]
    views = [repo.views[v.name] for v in VIEWS]
    nparts = source.partitions
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "streams",
                            "features", "tessera"], capture_output=True, text=True,
                           check=False).stdout.split("\n")
    res: dict = {"git_head": git, "uncommitted_worker_side_files": sorted(
                     ln[3:] for ln in dirty if ln.strip()),
                 "scale": scale, "events_in_log": n_ev, "users": n_users,
                 "views": len(views), "features": sum(len(v.features) for v in views),
                 "partitions": nparts, "stream_rate_per_s": LIVE_RATE,
                 "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}

    from kafka.partitioner.default import murmur2  # the SDK's partitioner (kafka-python's)

    ids = [f"u{u:06d}" for u in range(n_users)]
    upart = np.array([(murmur2(i.encode()) & 0x7FFFFFFF) % nparts for i in ids])
    rng = np.random.default_rng(42)
    weights = rng.lognormal(0, 1, n_users)
    weights /= weights.sum()
    t_gen = time.time()
    users = rng.choice(n_users, size=n_ev, p=weights)
    now = time.time_ns() // 1000
    span = 7 * DAY + 2 * HOUR  # a little beyond the longest window
    ts = np.sort(now - 60_000_000 - rng.integers(0, span, n_ev))  # log order ~ event time
    ts = ts - (rng.random(n_ev) < 0.05) * rng.integers(0, HOUR, n_ev)  # 5 % out of order
    amount = np.round(rng.lognormal(3, 1.2, n_ev), 2)
    part = upart[users]
    offsets = np.empty(n_ev, dtype=np.int64)
    for p in range(nparts):
        m = part == p
        offsets[m] = np.arange(int(m.sum()))

    broker = None
    if os.environ.get("KAFKA_BOOTSTRAP"):
        bootstrap = os.environ["KAFKA_BOOTSTRAP"]
    else:
        broker, bootstrap = start_broker(work / "broker")
    client = redis.Redis.from_url(redis_url, socket_timeout=60)
    client.flushall()
    home = work / "home"
    env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "REDIS_URL": redis_url,
           "TESSERA_HOME": str(home)}
    proc = None
    steady = poller = None
    try:
        ensure_topics([source], bootstrap)
        t0 = time.time()
        stats = _produce_backlog(bootstrap, source.topic, ids, users, ts, amount, part)
        res["backlog_produce_s"] = round(time.time() - t0, 1)
        res["backlog_generate_and_produce_events_per_s"] = round(n_ev / (time.time() - t_gen))
        if stats["errors"] or stats["undelivered"] or stats["out_of_order"]:
            raise RuntimeError(f"backlog not delivered cleanly: {stats}")
        end = stats["end"]
        assert sum(o + 1 for o in end.values()) == n_ev, (end, n_ev)

        mport = free_port()
        cmd = [sys.executable, "-c", "from tessera.cli import main; main()", "worker",
               "--repo", str(repo_path), "--group", LIVE_GROUP, "--max-records", "20000",
               "--session-timeout-ms", "6000", "--metrics-port", str(mport),
               "--log-level", "warning"]
        res["worker_command"] = "tessera " + " ".join(cmd[3:]).replace(str(work), "<work>")
        wlog = open(work / "worker.log", "wb")  # noqa: SIM115 - closed below
        wout = open(work / "worker.out", "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=wout, stderr=wlog)
        keys = [offset_key(LIVE_GROUP, source.topic, p) for p in range(nparts)]

        def applied() -> list[int]:
            from features.online.layout import applied_offset

            return [applied_offset(v) for v in client.mget(keys)]

        def covers(target: dict[int, int]) -> bool:
            a = applied()
            return all(a[p] >= o for p, o in target.items())

        elog = EventLog(home / "offline")

        def log_covers(target: dict[int, int]) -> bool:
            try:
                return all((elog.committed_offset(source, source.topic, p) or -1) >= o
                           for p, o in target.items())
            except (OSError, ValueError):
                return False

        t0 = time.time()
        _wait(lambda: covers(end), 1800, "the worker to consume the backlog", proc, 0.2)
        res["backlog_consume_s"] = round(time.time() - t0, 1)
        res["backlog_consume_events_per_s_incl_startup"] = round(n_ev / (time.time() - t0))
        _wait(lambda: log_covers(end), 120, "the event log to hold the backlog", proc, 0.2)
        res["backlog_in_log_s"] = round(time.time() - t0, 1)
        res["redis_used_memory_mb_before_flush"] = round(
            client.info("memory")["used_memory"] / 2**20, 1)

        poller = _Poller(redis_url, keys)
        poller.start()
        steady = _Steady(bootstrap, source.topic, ids, weights, upart, LIVE_RATE)
        steady.start()
        time.sleep(args.steady_s)
        if proc.poll() is not None:
            raise RuntimeError("the worker died during the steady stream")
        ready_before = poller.samples[-1][1] if poller.samples else None
        m_before = _metrics(mport)
        res["load_avg_1m_at_flush"] = round(os.getloadavg()[0], 2)
        t_flush = time.time()
        client.flushall()
        res["flushall_s"] = round(time.time() - t_flush, 3)

        def ready_again() -> bool:
            seen_down = False
            for t, ready, *_ in poller.samples:
                if t >= t_flush and not ready:
                    seen_down = True
                elif seen_down and ready:
                    return True
            return False

        # the metric is updated at the worker's next poll after the rebuild
        metric_ticks: list[tuple[float, dict]] = []

        def ready_and_counted() -> bool:
            metric_ticks.append((time.time(), _metrics(mport)))
            return ready_again() and metric_ticks[-1][1].get(
                "tessera_worker_store_rebuilds_total", 0) > m_before.get(
                "tessera_worker_store_rebuilds_total", 0)

        _wait(ready_and_counted, 600, "the store to be ready again", proc, 0.25)
        time.sleep(args.steady_s)
        steady.stopping.set()
        steady.join(90)
        last = steady.end_offsets()
        t0 = time.time()
        _wait(lambda: covers(last), 300, "the worker to apply the whole stream", proc, 0.05)
        res["drain_after_stop_s"] = round(time.time() - t0, 2)
        time.sleep(0.2)
        poller.stopping.set()
        poller.join(10)
        _wait(lambda: log_covers(last), 120, "the event log to hold the stream", proc, 0.2)
        m_after = _metrics(mport)
        res["worker_peak_rss_mb"] = round(_peak_rss_mb(proc.pid) or 0, 1)
        res["redis_used_memory_mb_at_end"] = round(client.info("memory")["used_memory"] / 2**20,
                                                   1)

        # -- readiness timeline ----------------------------------------------------------
        after = [s for s in poller.samples if s[0] >= t_flush]
        first_down = next((s for s in after if not s[1]), None)
        first_rebuilding = next((s for s in after if s[2] == "rebuilding"), None)
        first_up = next((s for s in after if first_down and s[0] > first_down[0] and s[1]),
                        None)
        flaps = sum(1 for a, b in zip(after, after[1:], strict=False) if a[1] != b[1])
        res.update({
            "ready_before_flush": ready_before,
            "not_ready_s": round(first_down[0] - t_flush, 3) if first_down else None,
            "rebuilding_flag_seen_s": (round(first_rebuilding[0] - t_flush, 3)
                                       if first_rebuilding else None),
            "rebuilt_s": round(first_up[0] - t_flush, 3) if first_up else None,
            "readiness_changes_after_flush": flaps,
            "poll_interval_ms": POLL_S * 1000,
            "polls": len(poller.samples),
        })
        # how far the stream fell behind: every live event, send -> covered by the watermark
        fr = _freshness(steady.delivered, poller.samples, nparts)
        pre = [d for t, d in fr if t < t_flush]
        t_up = first_up[0] if first_up else t_flush
        # caught up: the first poll covering everything sent until the store was ready again
        sent_by_up: dict[int, int] = {}
        for t, *_, p, o in steady.delivered:
            if t <= t_up:
                sent_by_up[p] = max(sent_by_up.get(p, -1), o)
        caught = next((s for s in poller.samples if s[0] >= t_up and all(
            s[3][p] >= o for p, o in sent_by_up.items())), None)
        t_caught = caught[0] if caught else None
        post = [d for t, d in fr if t_caught is not None and t > t_caught + 1.0]
        res.update({
            "stream_caught_up_s": round(t_caught - t_flush, 3) if t_caught else None,
            "freshness_p50_ms_before_flush": round(pct(pre, 0.5) * 1000, 1) if pre else None,
            "freshness_p99_ms_before_flush": round(pct(pre, 0.99) * 1000, 1) if pre else None,
            "freshness_max_s_during_outage": round(max(d for _, d in fr), 2) if fr else None,
            "freshness_p99_ms_after_catch_up": round(pct(post, 0.99) * 1000, 1) if post else None,
            # events sent from 1 s after the catch-up until the stream stopped
            "freshness_after_catch_up_events": len(post),
            "freshness_after_catch_up_window_s": (round(steady.t1 - t_caught - 1.0, 2)
                                                  if t_caught else None),
            "stream_events": len(steady.delivered),
            "stream_send_errors": steady.errors,
            "stream_wrong_partition": steady.wrong_partition,
            "stream_rate_achieved_per_s": round(steady.sent / max(steady.t1 - steady.t0, 1e-9)),
        })
        # -- the worker's own account of the rebuild ------------------------------------
        d = {k: m_after.get(k, 0) - m_before.get(k, 0) for k in m_after}
        res["worker_rebuilds"] = int(d.get("tessera_worker_store_rebuilds_total", 0))
        res["worker_rebuilt_entities"] = int(d.get("tessera_worker_rebuilt_entities_total", 0))
        res["worker_replayed_events_total"] = int(
            m_after.get("tessera_worker_replayed_events_total", 0))
        res["worker_late_events_total"] = int(m_after.get("tessera_worker_late_events_total", 0))
        res["worker_dead_letters_total"] = int(
            m_after.get("tessera_worker_dead_letter_events_total", 0))
        res["worker_fence_retries_total"] = int(
            m_after.get("tessera_worker_fence_retries_total", 0))
        wlog.flush()
        text = (work / "worker.log").read_text(errors="replace")
        rebuilt = re.findall(r"rebuilt \S+ partitions \[([^\]]*)\] from the event log: (\d+) "
                             r"entities, (\d+) events in ([\d.]+) s", text)
        res["worker_rebuild_log"] = [
            {"partitions": [int(x) for x in ps.split(",") if x.strip()], "entities": int(e),
             "events": int(n), "seconds": float(s)} for ps, e, n, s in rebuilt]
        if rebuilt:
            ents = sum(int(r[1]) for r in rebuilt)
            secs = sum(float(r[3]) for r in rebuilt)
            res["rebuild_entities"] = ents
            res["rebuild_events_folded"] = sum(int(r[2]) for r in rebuilt)
            res["rebuild_worker_s"] = round(secs, 2)
            res["entities_per_s"] = round(ents / secs) if secs else None
        if first_up and res.get("worker_rebuilt_entities"):
            res["entities_per_s_flush_to_ready"] = round(
                res["worker_rebuilt_entities"] / (first_up[0] - t_flush))
        res["worker_log_warnings"] = [ln[:300] for ln in text.splitlines()
                                      if "WARNING" in ln or "ERROR" in ln][:20]
        res["worker_log_errors"] = sum(1 for ln in text.splitlines()
                                       if "ERROR" in ln or "Traceback" in ln)
        if args.keep_worker_log:
            Path(args.keep_worker_log).write_text(text)

        # -- exactly once: the reference, and the log holding each offset once -----------
        live = steady.delivered
        all_users = np.concatenate([users, np.array([x[1] for x in live], dtype=np.int64)])
        all_ts = np.concatenate([ts, np.array([x[2] for x in live], dtype=np.int64)])
        all_off = np.concatenate([offsets, np.array([x[5] for x in live], dtype=np.int64)])
        all_amt = np.concatenate([amount, np.array([x[3] for x in live], dtype=np.float64)])
        busiest_live = (int(np.bincount([x[1] for x in live]).argmax()),) if live else ()
        t_read = time.time_ns() // 1000  # after the newest event
        ref = reference_check(client, (all_users, all_ts, all_off, all_amt), args.sample,
                              views=views, t=t_read, extra=busiest_live)
        res.update(ref)
        got = elog.scan(source).select("_partition", "_offset").collect()
        res["log_rows"] = got.height
        res["log_rows_expected"] = n_ev + len(live)
        res["log_duplicate_offsets"] = got.height - got.unique().height
    finally:
        if steady is not None:
            steady.stopping.set()
        if poller is not None:
            poller.stopping.set()
        if proc is not None:
            stop(proc, timeout=60)
            res["worker_exit_code"] = proc.returncode
            out = (work / "worker.out").read_text(errors="replace")
            line = [x for x in out.splitlines() if '"first_record_at"' in x]
            if line:
                s = line[-1]
                res["worker_stats"] = json.loads(s[s.index("{"):s.rindex("}") + 1]).get(
                    source.topic)
        if broker is not None:
            stop(broker)
    res["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    res["goal"] = "ready again within 30 s of the FLUSHALL"
    res["goal_met"] = res.get("rebuilt_s") is not None and res["rebuilt_s"] <= 30
    return res


SCENARIOS: dict[str, Callable[[argparse.Namespace, Path, str], dict]] = {
    "rebuild": scenario_rebuild,
    "live": scenario_live,
}
TABLE = ["scale", "events", "entities", "events_folded", "wall_s", "read_s",
         "fold_and_write_s", "cpu_s", "peak_rss_mb", "entities_per_s", "events_per_s",
         "redis_used_memory_mb", "load_avg_1m_before",
         # live
         "events_in_log", "users", "backlog_consume_events_per_s_incl_startup",
         "stream_rate_achieved_per_s", "load_avg_1m_at_flush", "flushall_s", "not_ready_s",
         "rebuilding_flag_seen_s", "rebuilt_s", "rebuild_worker_s", "rebuild_entities",
         "rebuild_events_folded", "stream_caught_up_s", "freshness_p99_ms_before_flush",
         "freshness_max_s_during_outage", "freshness_p99_ms_after_catch_up",
         "worker_peak_rss_mb", "load_avg_1m_at_end", "log_rows", "log_rows_expected",
         "log_duplicate_offsets", "goal_met",
         "reference_values", "mismatches"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the size")
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    ap.add_argument("--sample", type=int, default=300, help="users checked by the reference")
    ap.add_argument("--steady-s", type=float, default=10.0,
                    help="live: seconds of steady stream before the FLUSHALL and after ready")
    ap.add_argument("--keep-worker-log", default=None, help="live: copy the worker's log here")
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
                            "command": f"bench/rebuild.py --scenario {name}"
                                       f"{' --quick' if args.quick else ''}"})
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
