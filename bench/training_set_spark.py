"""Benchmark: the training set on Spark (local[2]) beside the polars builder, in one run.

    .venv/bin/python bench/training_set_spark.py --scale 0.1 1

Per scale: generates bench/training_set.py's data (seed 42: 5M x S events, 1M x S spine rows,
16 features), builds the training set with engine="polars" and with engine="spark" each in a
child process (Spark's JVM and its Python workers are that child's descendants), sampling the
RSS of the child's whole process tree from /proc every 50 ms (driver + executors + Python
workers; shared pages count once per process, so the sum overstates a little); wall time
includes starting the Spark session. Then checks the Spark frame equals the polars one and
checks a sample of both against bench/training_set.py's DuckDB reference. Writes
``bench/results/training_set_spark.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from training_set import feature_refs, generate, reference, repo  # noqa: E402

from features.offline.training_set import build_training_set, write_training_set  # noqa: E402
from features.settings import Settings  # noqa: E402


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


def run_child(home: Path, engine: str, partitions: int) -> None:
    """The timed part, alone in its process: (start Spark and) build and write the set."""
    t0 = time.perf_counter()
    settings = Settings(home)
    r = repo(home / "batch" / "user_snapshot.parquet")
    if engine == "spark":
        from features.offline.spark_engine import spark_session

        spark_session("local[2]", shuffle_partitions=partitions, driver_memory="2g")
    started = time.perf_counter() - t0
    ts = build_training_set(home / "spine.parquet", feature_refs(r), repo=r, settings=settings,
                            engine=engine)
    write_training_set(ts.frame, home / f"train_{engine}.parquet", ts.fingerprint)
    wall = time.perf_counter() - t0
    print(json.dumps({"wall_s": wall, "session_start_s": started, "rows": ts.frame.height,
                      "fingerprint": ts.fingerprint}))


def timed(home: Path, engine: str, partitions: int) -> dict:
    """Run one engine in a child; its figures plus the tree's peak RSS."""
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
    if proc.returncode != 0:
        sys.exit(f"{engine} run failed:\n{err[-4000:]}")
    child = json.loads(out.strip().splitlines()[-1])
    return {**child, "peak_rss_mb": peak / 1024}


def one_scale(scale: float, sample: int, partitions: int | None) -> dict:
    home = Path(tempfile.mkdtemp(prefix="tessera-bench-spark-"))
    try:
        sizes = generate(home, scale)
        parts = partitions or max(4, round(8 * scale))
        load = os.getloadavg()[0]
        pol = timed(home, "polars", parts)
        spk = timed(home, "spark", parts)
        a = pl.read_parquet(home / "train_polars.parquet")
        b = pl.read_parquet(home / "train_spark.parquet")
        same = a.equals(b) and a.schema == b.schema
        ref_pol = reference(home, home / "train_polars.parquet", sample)
        ref_spk = reference(home, home / "train_spark.parquet", sample)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return {
        "scale": scale, **sizes, "features": 16, "spark_partitions": parts,
        "load_avg_1m_before": round(load, 2),
        "polars": {"wall_s": round(pol["wall_s"], 2), "peak_rss_mb": round(pol["peak_rss_mb"]),
                   "reference_match": ref_pol["reference_match"]},
        "spark": {"wall_s": round(spk["wall_s"], 2),
                  "session_start_s": round(spk["session_start_s"], 2),
                  "peak_rss_mb": round(spk["peak_rss_mb"]),
                  "reference_match": ref_spk["reference_match"],
                  "mismatches": ref_spk["mismatches"]},
        "spark_equals_polars": same,
        "reference_sample_rows": ref_spk["reference_sample_rows"],
        "reference_values_compared": ref_spk["reference_values_compared"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, nargs="+", default=[0.1, 1.0])
    ap.add_argument("--sample", type=int, default=5000, help="spine rows checked by DuckDB")
    ap.add_argument("--partitions", type=int, default=None,
                    help="entity-hash partitions (default max(4, 8 x scale))")
    ap.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--engine", default="spark", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args.child, args.engine, args.partitions)
        return
    runs = [one_scale(s, args.sample, args.partitions) for s in args.scale]
    result = {"runs": runs, "master": "local[2]", "machine": "2 shared cores",
              "command": "bench/training_set_spark.py --scale "
                         + " ".join(str(s) for s in args.scale)}
    out = ROOT / "bench" / "results" / "training_set_spark.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'scale':>6} {'spine':>9} {'engine':>7} {'wall_s':>8} {'rss_mb':>8} "
          f"{'ref_match':>9} {'==polars':>8}")
    for r in runs:
        for eng in ("polars", "spark"):
            e = r[eng]
            print(f"{r['scale']:>6} {r['spine_rows']:>9} {eng:>7} {e['wall_s']:>8} "
                  f"{e['peak_rss_mb']:>8} {e['reference_match']!s:>9} "
                  f"{(str(r['spark_equals_polars']) if eng == 'spark' else ''):>8}")
    if not all(r["spark_equals_polars"] and r["spark"]["reference_match"]
               and r["polars"]["reference_match"] for r in runs):
        sys.exit(1)


if __name__ == "__main__":
    main()
