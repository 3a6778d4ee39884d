"""Benchmark: a point-in-time training set from raw events, on polars and/or Spark, checked
against DuckDB.

    .venv/bin/python bench/training_set.py --engine both --scale 1 10 --data /tmp/tessera-ts

Per scale: generates (deterministically, seed 42) an event log of 5M x S card transactions for
100k x S users over 30 days, a batch view of daily user snapshots (4 features) and a spine of
1M x S rows (``--data``: kept in DIR/s<S> and reused by later runs; generating scale 10 takes
~9 min here); builds the training set (12 windowed features: count/sum/mean/max over
1h/24h/7d, plus the 4 batch features) with each engine in a child process (Spark's JVM and its
Python workers are that child's descendants), sampling the RSS of the child's whole process
tree from /proc every 50 ms (driver + executors + Python workers; shared pages count once per
process, so the sum overstates a little); wall time includes starting the Spark session and
writing the Parquet. Then, in this process, recomputes a sample of spine rows with a DuckDB
range join (windowed) and ASOF join (batch) read straight from the same Parquet files, compares
every value, and checks the engines' frames are equal. Writes
``bench/results/training_set.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features import Aggregate, BatchFeatureView, FeatureRepo, FeatureView  # noqa: E402
from features.offline.event_log import EventLog  # noqa: E402
from features.offline.training_set import build_training_set, write_training_set  # noqa: E402
from features.semantics.windows import DAY  # noqa: E402
from features.settings import Settings  # noqa: E402

sys.path.insert(0, str(ROOT / "examples"))
from feature_repo import transactions, user  # noqa: E402

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in µs
WINDOWS = ["1h", "24h", "7d"]
BATCH_FEATURES = ["credit_limit", "account_age_days", "risk_score", "n_cards"]


def repo(batch_path: Path) -> FeatureRepo:
    """The demo's 12 windowed features plus a 4-feature daily snapshot batch view."""
    views = [
        FeatureView("user_txn_count", transactions,
                    [Aggregate("count", WINDOWS, name="txn_count_{window}")]),
        FeatureView("user_spend", transactions, [Aggregate("sum", WINDOWS, field="amount"),
                                                 Aggregate("mean", WINDOWS, field="amount")]),
        FeatureView("user_spend_max", transactions, [Aggregate("max", WINDOWS, field="amount")]),
        BatchFeatureView("user_snapshot", user, str(batch_path), "ts",
                         {"credit_limit": "float", "account_age_days": "int",
                          "risk_score": "float", "n_cards": "int"}, ttl="2d"),
    ]
    return FeatureRepo.of(views)


def feature_refs(r: FeatureRepo) -> list[str]:
    return [f"{v.name}:{n}" for v in r.views.values() for n in v.feature_names]


def generate(home: Path, scale: float, seed: int = 42) -> dict:
    """Events into the event log (4 partitions, Kafka-like offsets), snapshots and a spine."""
    rng = np.random.default_rng(seed)
    n_ev, n_users, n_spine = int(5_000_000 * scale), int(100_000 * scale), int(1_000_000 * scale)
    span = 30 * DAY
    weights = rng.lognormal(0, 1, n_users)
    weights /= weights.sum()
    users = rng.choice(n_users, size=n_ev, p=weights)
    ts = T0 + rng.integers(0, span, n_ev)
    amount = np.round(rng.lognormal(3, 1.2, n_ev), 2)
    order = np.argsort(ts, kind="stable")  # log order roughly follows event time
    users, ts, amount = users[order], ts[order], amount[order]
    ts = ts - (rng.random(n_ev) < 0.05) * rng.integers(0, 3_600_000_000, n_ev)  # late events
    ids = np.char.add("u", np.char.zfill(users.astype(str), 6))
    log = EventLog(Settings(home).offline_dir)
    part = users % 4
    for p in range(4):
        m = part == p
        k = int(m.sum())
        log.append(transactions, pa.table({
            "user_id": ids[m], "merchant_id": np.full(k, "m1"), "amount": amount[m],
            "country": np.full(k, "FR"),
            "ts": pa.array(ts[m], pa.timestamp("us", tz="UTC")),
            "_offset": np.arange(k, dtype=np.int64),
            "_ingest_ts": pa.array(np.maximum.accumulate(ts[m]), pa.timestamp("us", tz="UTC")),
        }), topic="transactions", partition=p)
    # batch view: a snapshot per user on ~1/3 of days
    days = np.arange(30)
    su = np.repeat(np.arange(n_users), 30)
    sd = np.tile(days, n_users)
    keep = rng.random(len(su)) < 0.35
    su, sd = su[keep], sd[keep]
    batch = home / "batch" / "user_snapshot.parquet"
    batch.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({
        "user_id": np.char.add("u", np.char.zfill(su.astype(str), 6)),
        "ts": pl.Series(T0 + sd * DAY + rng.integers(0, DAY, len(su))).cast(
            pl.Datetime("us", "UTC")),
        "credit_limit": np.round(rng.uniform(500, 20_000, len(su)), 0),
        "account_age_days": rng.integers(0, 4000, len(su)),
        "risk_score": rng.random(len(su)),
        "n_cards": rng.integers(1, 5, len(su)),
    }).write_parquet(batch)
    # spine: users (2% never seen), times over the month, a label; unsorted
    spine_u = np.where(rng.random(n_spine) < 0.02, n_users + rng.integers(0, 1000, n_spine),
                       rng.choice(n_users, size=n_spine, p=weights))
    spine = pl.DataFrame({
        "user_id": np.char.add("u", np.char.zfill(spine_u.astype(str), 6)),
        "ts": pl.Series(T0 + rng.integers(0, span + DAY, n_spine)).cast(pl.Datetime("us", "UTC")),
        "label": rng.random(n_spine) < 0.03,
    })
    spine.write_parquet(home / "spine.parquet")
    return {"events": n_ev, "users": n_users, "spine_rows": n_spine, "batch_rows": len(su)}


def run_child(home: Path, engine: str, partitions: int) -> None:
    """The timed part, alone in its process: (start Spark and) build and write the set."""
    t0 = time.perf_counter()
    settings = Settings(home)
    r = repo(home / "batch" / "user_snapshot.parquet")
    if engine == "spark":
        from features.offline.spark_engine import spark_session

        # the driver holds the collected set (~1.5 GB of Arrow at scale 10): 2 GB up to scale 2
        driver_gb = max(2, -(-partitions // 8))
        spark_session("local[2]", shuffle_partitions=partitions, driver_memory=f"{driver_gb}g")
    started = time.perf_counter() - t0
    ts = build_training_set(home / "spine.parquet", feature_refs(r), repo=r, settings=settings,
                            engine=engine)
    built = time.perf_counter() - t0
    write_training_set(ts.frame, home / f"train_{engine}.parquet", ts.fingerprint)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall_s": wall, "build_s": built, "session_start_s": started,
                      "rows": ts.frame.height, "cpu_s": usage.ru_utime + usage.ru_stime,
                      "fingerprint": ts.fingerprint, "files_read": len(ts.files)}))


def _tree_rss_kb(root: int) -> int:
    """Summed VmRSS of ``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def timed(home: Path, engine: str, partitions: int) -> dict:
    """Run one engine in a child; its figures plus the process tree's peak RSS."""
    load = os.getloadavg()
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(home), "--engine", engine,
                             "--partitions", str(partitions)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_kb(proc.pid))
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = proc.communicate()
    done.set()
    th.join()
    if proc.returncode != 0:  # recorded, not fatal: the other engines' figures still count
        cause = [ln.strip() for ln in err.splitlines()
                 if "Error" in ln or "Exception" in ln or "Caused by" in ln]
        return {"failed": True, "returncode": proc.returncode, "peak_rss_mb": peak / 1024,
                "error": cause[:6] or err[-1500:].splitlines(),
                "load_avg_before": [round(x, 2) for x in load]}
    child = json.loads(out.strip().splitlines()[-1])
    return {**child, "peak_rss_mb": peak / 1024, "load_avg_before": [round(x, 2) for x in load],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()]}


def reference(home: Path, train: Path, sample: int, seed: int = 7) -> dict:
    """DuckDB recomputation of a sample of rows, straight from the event log's Parquet."""
    import duckdb

    r = repo(home / "batch" / "user_snapshot.parquet")
    df = pl.read_parquet(train).with_row_index("row")
    rows = df.sample(n=min(sample, df.height), seed=seed)
    files = [str(EventLog(Settings(home).offline_dir).source_dir(transactions) / rel)
             for rel, _ in EventLog(Settings(home).offline_dir).files(transactions)]
    t0 = time.perf_counter()
    con = duckdb.connect()
    con.register("s", rows.select("row", "user_id", "ts").to_arrow())
    con.sql(f"CREATE TABLE ev AS SELECT user_id, epoch_us(ts) AS t, amount "
                f"FROM read_parquet({files!r})")
    feats = r.views["user_spend"].features + r.views["user_spend_max"].features
    counts = r.views["user_txn_count"].features
    names = []
    for v in ("user_txn_count", "user_spend", "user_spend_max"):
        names += [f"{v}__{f.name}" for f in r.views[v].features]
    select = []
    for f, name in zip(counts + feats, names, strict=True):
        start = f"{f.hop} * ((q.t - {f.window}) // {f.hop})"  # t - W > 0 here: // floors
        flt = f"FILTER (WHERE ev.t >= {start} AND ev.t < q.t)"
        expr = {"count": f"count(ev.t) {flt}", "sum": f"coalesce(sum(ev.amount) {flt}, 0)",
                "mean": f"avg(ev.amount) {flt}", "max": f"max(ev.amount) {flt}"}[f.fn]
        select.append(f'{expr} AS "{name}"')
    longest = max(f.window + f.hop for f in counts + feats)
    windowed = pl.from_arrow(con.sql(f"""
        WITH q AS (SELECT row, user_id, epoch_us(ts) AS t FROM s)
        SELECT q.row, {', '.join(select)}
        FROM q LEFT JOIN ev ON ev.user_id = q.user_id AND ev.t >= q.t - {longest} AND ev.t < q.t
        GROUP BY q.row ORDER BY q.row""").to_arrow_table())
    bv = r.views["user_snapshot"]
    bcols = ", ".join(f'CASE WHEN q.t - epoch_us(b.ts) < {bv.ttl} THEN b.{n} END '
                      f'AS "user_snapshot__{n}"' for n in BATCH_FEATURES)
    batch = pl.from_arrow(con.sql(f"""
        WITH q AS (SELECT row, user_id, epoch_us(ts) AS t FROM s),
             b AS (SELECT * FROM read_parquet('{bv.path}'))
        SELECT q.row, {bcols}
        FROM q ASOF LEFT JOIN b ON q.user_id = b.user_id AND q.t >= epoch_us(b.ts)
        ORDER BY q.row""").to_arrow_table())
    ref_wall = time.perf_counter() - t0
    ref = windowed.join(batch, on="row").sort("row")
    got = rows.sort("row")
    mismatches = []
    for col in ref.columns[1:]:
        exact = "count" in col or "max" in col or "user_snapshot" in col
        for a, b, row in zip(got[col].to_list(), ref[col].to_list(), ref["row"], strict=True):
            if a is None or b is None:
                ok = a is None and b is None
            elif exact:
                ok = a == b
            else:
                ok = math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
            if not ok:
                mismatches.append({"row": row, "column": col, "got": a, "want": b})
    return {"reference_match": not mismatches, "reference_sample_rows": rows.height,
            "reference_wall_s": ref_wall, "mismatches": mismatches[:10],
            "reference_values_compared": rows.height * (len(ref.columns) - 1),
            # the check means something only if the sample has non-empty windows and hits
            "sample_nonempty_7d": round(float((ref["user_txn_count__txn_count_7d"] > 0).mean()), 3),
            "sample_batch_hits": round(1 - ref["user_snapshot__risk_score"].null_count()
                                       / max(ref.height, 1), 3)}


def data_home(root: Path | None, scale: float) -> tuple[Path, dict, float | None]:
    """(folder, sizes, seconds generating or None when reused): the data of one scale."""
    if root is None:
        home = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    else:
        home = root / f"s{scale:g}"
        if (home / "sizes.json").exists():
            return home, json.loads((home / "sizes.json").read_text()), None
        shutil.rmtree(home, ignore_errors=True)
    t0 = time.perf_counter()
    sizes = generate(home, scale)
    (home / "sizes.json").write_text(json.dumps(sizes))
    return home, sizes, time.perf_counter() - t0


def one_scale(scale: float, engines: list[str], root: Path | None, sample: int,
              partitions: int | None) -> dict:
    home, sizes, gen_s = data_home(root, scale)
    parts = partitions or max(4, round(8 * scale))
    out = {"scale": scale, **sizes, "features": 16,
           "generate_s": None if gen_s is None else round(gen_s, 1)}
    try:
        for engine in engines:
            got = timed(home, engine, parts)
            if got.get("failed"):
                out[engine] = {k: (round(v) if k == "peak_rss_mb" else v) for k, v in got.items()}
                continue
            ref = reference(home, home / f"train_{engine}.parquet", sample)
            out[engine] = {
                "wall_s": round(got["wall_s"], 2), "build_s": round(got["build_s"], 2),
                "cpu_s": round(got["cpu_s"], 1),  # the child's own (not Spark's JVM)
                "peak_rss_mb": round(got["peak_rss_mb"]),
                "rows_per_s": round(got["rows"] / got["wall_s"]),
                "load_avg_before": got["load_avg_before"],
                "load_avg_after": got["load_avg_after"],
                "fingerprint": got["fingerprint"], "event_files_read": got["files_read"],
                **({"session_start_s": round(got["session_start_s"], 2),
                    "spark_partitions": parts} if engine == "spark" else {}),
                **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in ref.items()},
            }
        if len(engines) == 2 and not any(out[e].get("failed") for e in engines):
            a = pl.read_parquet(home / "train_polars.parquet")
            b = pl.read_parquet(home / "train_spark.parquet")
            out["spark_equals_polars"] = a.equals(b) and a.schema == b.schema
    finally:
        if root is None:
            shutil.rmtree(home, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", choices=["polars", "spark", "both"], default="polars")
    ap.add_argument("--scale", type=float, nargs="+", default=[1.0])
    ap.add_argument("--sample", type=int, default=5000, help="spine rows checked by DuckDB")
    ap.add_argument("--data", type=Path, default=None,
                    help="keep generated data in DIR/s<scale> and reuse it (default: a temp "
                         "folder, removed)")
    ap.add_argument("--partitions", type=int, default=None,
                    help="Spark's entity-hash partitions (default max(4, 8 x scale))")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "training_set.json")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args.child, args.engine, args.partitions)
        return
    engines = ["polars", "spark"] if args.engine == "both" else [args.engine]
    runs = [one_scale(s, engines, args.data, args.sample, args.partitions) for s in args.scale]
    result = {"runs": runs, "spark_master": "local[2]" if "spark" in engines else None,
              "machine": "2 cores shared with other sessions (see load_avg_*: 1, 5, 15 min)",
              "command": f"bench/training_set.py --engine {args.engine} --scale "
                         + " ".join(f"{s:g}" for s in args.scale)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'scale':>6} {'events':>9} {'spine':>9} {'engine':>7} {'wall_s':>8} {'cpu_s':>7} "
          f"{'rss_mb':>7} {'load':>5} {'ref_match':>9} {'==polars':>8}")
    ok = True
    for r in runs:
        for eng in engines:
            e = r[eng]
            if e.get("failed"):
                ok = False
                print(f"{r['scale']:>6g} {r['events']:>9} {r['spine_rows']:>9} {eng:>7} FAILED "
                      f"(peak {e['peak_rss_mb']} MB): {' | '.join(e['error'])[:300]}")
                continue
            ok &= e["reference_match"]
            same = str(r["spark_equals_polars"]) if eng == "spark" and len(engines) == 2 else ""
            print(f"{r['scale']:>6g} {r['events']:>9} {r['spine_rows']:>9} {eng:>7} "
                  f"{e['wall_s']:>8} {e['cpu_s']:>7} {e['peak_rss_mb']:>7} "
                  f"{e['load_avg_before'][0]:>5} {e['reference_match']!s:>9} {same:>8}")
            if not e["reference_match"]:
                print("MISMATCHES:", json.dumps(e["mismatches"], indent=1))
        ok &= r.get("spark_equals_polars", True)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
