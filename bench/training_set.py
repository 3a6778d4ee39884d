"""Benchmark: a point-in-time training set from raw events, checked against DuckDB.

    .venv/bin/python bench/training_set.py --scale 1

Generates (deterministically, seed 42) an event log of 5M x S card transactions for 100k x S
users over 30 days, a batch view of daily user snapshots (4 features) and a spine of 1M x S
rows; builds the training set (12 windowed features: count/sum/mean/max over 1h/24h/7d, plus the
4 batch features) in a child process, so wall time and peak RSS are that run's alone; then, in
this process, recomputes a sample of spine rows with a DuckDB range join (windowed) and ASOF
join (batch) read straight from the same Parquet files, and compares every value. Writes
``bench/results/training_set.json``.
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


def run_child(home: Path, out: Path) -> None:
    """The timed part, alone in its process: build and write the training set."""
    t0 = time.perf_counter()
    settings = Settings(home)
    r = repo(home / "batch" / "user_snapshot.parquet")
    ts = build_training_set(home / "spine.parquet", feature_refs(r), repo=r, settings=settings)
    write_training_set(ts.frame, out, ts.fingerprint)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss_mb = usage.ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "peak_rss_mb": rss_mb, "rows": ts.frame.height,
                      "cpu_s": usage.ru_utime + usage.ru_stime,
                      "fingerprint": ts.fingerprint, "files_read": len(ts.files)}))


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--sample", type=int, default=5000, help="spine rows checked by DuckDB")
    ap.add_argument("--keep", type=Path, default=None, help="keep the data in this folder")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args.child, args.child / "train.parquet")
        return
    home = args.keep or Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    try:
        t0 = time.perf_counter()
        sizes = generate(home, args.scale)
        gen_s = time.perf_counter() - t0
        load_before = os.getloadavg()[0]
        proc = subprocess.run([sys.executable, __file__, "--child", str(home)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"training-set run failed:\n{proc.stderr}")
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        ref = reference(home, home / "train.parquet", args.sample)
    finally:
        if args.keep is None:
            shutil.rmtree(home, ignore_errors=True)
    result = {
        "scale": args.scale, **sizes, "features": 16, "generate_s": round(gen_s, 2),
        "wall_s": round(child["wall_s"], 3), "peak_rss_mb": round(child["peak_rss_mb"], 1),
        "cpu_s": round(child["cpu_s"], 2),
        "load_avg_1m_before": round(load_before, 2),  # the 2 cores are shared: context
        "rows_per_s": round(child["rows"] / child["wall_s"]),
        "event_files_read": child["files_read"], "fingerprint": child["fingerprint"],
        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in ref.items()},
        "machine": "2 shared cores", "command": f"bench/training_set.py --scale {args.scale}",
    }
    out = ROOT / "bench" / "results" / "training_set.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for k in ("scale", "events", "users", "spine_rows", "features", "wall_s", "cpu_s",
              "load_avg_1m_before", "peak_rss_mb",
              "rows_per_s", "reference_sample_rows", "reference_wall_s", "reference_match"):
        print(f"{k:24} {result[k]}")
    if not ref["reference_match"]:
        print("MISMATCHES:", json.dumps(ref["mismatches"], indent=1))
        sys.exit(1)


if __name__ == "__main__":
    main()
