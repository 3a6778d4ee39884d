"""End-to-end demo on embedded defaults (`make demo`).

1. start a local Kafka-protocol broker and Redis (`tessera up`), apply the feature repo;
2. publish three days of synthetic card transactions (some late, some malformed);
3. run a stream worker until it is idle: tiles into Redis, events into the Parquet log;
4. show online features next to their offline recomputation, and run the skew check;
5. materialize the batch view (user profiles) into the same Redis hashes;
6. build one point-in-time training set of windowed + batch + request-time features (this
   amount over the user's 24 h mean, over their credit limit), label it with a known synthetic
   truth, train LightGBM, register it as champion, serve it over HTTP and score live users: the
   scores served equal the model's scores on the training set's rows for the same users, time
   and amounts (zero skew, no column renamed);
7. run a champion + A/B arm + shadow experiment on live traffic with outcomes, print the verdict;
8. the MLOps loop through the live path (``examples/drift_demo.py``): payments on Kafka, the
   worker, ``tessera serve``, the prediction-log sink and outcomes; drift injected into the
   events, the alert, a retrain from the outcome log run as a shadow, promoted when better.

Everything lives under ``$TESSERA_HOME`` (default ``.tessera/demo``) and is started fresh.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
REPO = str(ROOT / "examples" / "feature_repo.py")
HOME = Path(os.environ.get("TESSERA_HOME", ROOT / ".tessera" / "demo")).resolve()
TESSERA = [sys.executable, "-m", "tessera"]
DAY_US = 86_400 * 1_000_000
FEATURES = [
    "user_txn_count:txn_count_1h", "user_txn_count:txn_count_24h", "user_txn_count:txn_count_7d",
    "user_spend:amount_sum_1h", "user_spend:amount_sum_24h", "user_spend:amount_sum_7d",
    "user_spend:amount_mean_24h", "user_spend:amount_mean_7d",
    "user_spend_max:amount_max_24h", "user_spend_max:amount_max_7d",
    "user_profile:account_age_days", "user_profile:credit_limit",
    "txn_now:amount_over_mean_24h", "txn_now:amount_over_limit",
]


def step(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def run(*args: str, check: bool = True) -> str:
    out = subprocess.run([*TESSERA, *args], capture_output=True, text=True, env=ENV)
    if check and out.returncode != 0:
        sys.stderr.write(out.stdout + out.stderr)
        raise SystemExit(f"`tessera {' '.join(args)}` failed with {out.returncode}")
    return out.stdout


def main() -> None:
    if HOME.exists():
        subprocess.run([*TESSERA, "down"], env=ENV, capture_output=True)
        shutil.rmtree(HOME)
    HOME.mkdir(parents=True)
    try:
        _demo()
    finally:
        step("stopping local services")
        print(run("down", check=False).strip())


def _demo() -> None:
    from features.settings import Settings

    step("1. local services and feature repo")
    print(run("up").strip())
    settings = Settings.from_env(HOME)
    ENV["KAFKA_BOOTSTRAP"], ENV["REDIS_URL"] = settings.kafka_bootstrap, settings.redis_url
    print(run("apply", "--repo", REPO).strip())

    step("2. publish 3 days of synthetic transactions")
    from examples.feature_repo import transactions
    from streams.generate import transactions as synthetic
    from streams.producer import Publisher

    now = time.time_ns() // 1000
    n_events, users = 60_000, 2_000
    start = now - 3 * DAY_US
    events = list(synthetic(n_events, start_us=start, rate=n_events / (3 * 86_400),
                            users=users, seed=11))
    with Publisher(transactions, settings.kafka_bootstrap) as pub:
        report = pub.publish([e for e in events if isinstance(e, dict)])
        for raw in (e for e in events if isinstance(e, bytes)):
            pub.send_raw(raw)  # malformed on purpose: the worker dead-letters them
    print(f"sent {report.sent} valid events, {len(events) - report.sent - len(report.rejected)} "
          f"malformed ones raw, producer rejected {len(report.rejected)}")

    step("3. stream worker (faust) until idle")
    t0 = time.time()
    worker = subprocess.run(
        [*TESSERA, "worker", "--repo", REPO, "--max-idle-s", "8", "--log-level", "warning"],
        capture_output=True, text=True, env=ENV, timeout=600,
    )
    print((worker.stdout or "").strip()[-1500:])
    if worker.returncode != 0:
        print(worker.stderr[-3000:])
        raise SystemExit("worker failed")
    print(f"worker done in {time.time() - t0:.1f}s (includes the consumer-group join)")

    step("4. batch view (user profiles) materialized into the same Redis hashes")
    _write_profiles(settings, start)
    print(run("materialize", "--repo", REPO).strip())

    step("5. online values next to offline recomputation")
    _online_vs_offline(settings)
    print(run("skew-check", "--view", "user_spend", "--sample", "200", "--repo", REPO).strip())
    print(run("skew-check", "--view", "user_profile", "--sample", "200", "--repo", REPO).strip())

    step("6. one training set (windowed + batch + request-time) -> LightGBM -> HTTP scorer")
    train_path = _training_set(settings, start, now)
    print(run("train", "--training-set", str(train_path), "--label", "is_fraud",
              "--model", "fraud", "--features", ",".join(FEATURES), "--timestamp-column", "ts",
              "--repo", REPO, "--alias", "champion", "--seed", "7").strip())
    _serve_and_score(settings)

    step("7. champion + A/B arm + shadow on live traffic, outcomes, verdict")
    print(run("experiment", "demo", "--requests", "20000", "--rate", "4000").strip())

    step("8. drift in the events -> alert -> retrain from outcomes -> shadow -> promoted")
    (HOME / "drift").mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "drift_demo.py"),
                          "--home", str(HOME / "drift")], capture_output=True, text=True,
                         env=ENV)
    print(out.stdout.strip()[-4000:])
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-3000:])
        raise SystemExit("drift demo failed")


def _online_vs_offline(settings) -> None:
    from features import training_set
    from features.definitions import FeatureRepo
    from features.online.connection import connect_settings
    from features.online.read import OnlineStore
    from features.registry import load_module

    repo: FeatureRepo = load_module(REPO)
    online_refs = [*FEATURES[:6], "user_profile:credit_limit"]
    store = OnlineStore(connect_settings(settings), repo)
    t = time.time_ns() // 1000
    users = ["u0", "u1", "u7"]
    res = store.get_features(online_refs, [{"user_id": u} for u in users], at_us=t)
    spine = pl.DataFrame({"user_id": users, "ts": [t] * len(users)}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")))
    off = training_set(spine, online_refs, repo=repo, settings=settings)
    for i, u in enumerate(users):
        print(f"user {u}:")
        for j, ref in enumerate(online_refs):
            col = ref.replace(":", "__")
            print(f"  {ref:34s} online={_fmt(res.values[i][j]):>12s}  "
                  f"offline={_fmt(off[col][i]):>12s}")


def _fmt(v) -> str:
    return "null" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def _write_profiles(settings, start: int) -> None:
    """The batch view's Parquet, as a daily profile job would write it."""
    rng = np.random.default_rng(4)
    users = [f"u{i}" for i in range(2_000)]
    batch = settings.home / "batch"
    batch.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({
        "user_id": users,
        "ts": [start - DAY_US] * len(users),
        "account_age_days": rng.integers(1, 3_000, len(users)),
        "credit_limit": np.round(rng.lognormal(8, 0.5, len(users)), 2),
    }).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC"))).write_parquet(
        batch / "user_profile.parquet")


def _training_set(settings, start: int, now: int) -> Path:
    from features.offline.training_set import build_training_set, write_training_set
    from features.registry import load_module

    rng = np.random.default_rng(5)
    users = [f"u{i}" for i in range(2_000)]
    n = 20_000
    # the spine: one row per scored authorisation -- who, when, and the request's amount
    spine = pl.DataFrame({
        "user_id": rng.choice(users, n),
        "ts": rng.integers(start + DAY_US // 2, now, n),
        "amount": np.round(rng.lognormal(3, 1, n), 2),
    }).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    repo = load_module(REPO)
    built = build_training_set(spine, FEATURES, repo=repo, settings=settings)
    df = built.frame
    # A known synthetic truth: fraud is likelier for bursts of spending by young accounts.
    cols = {ref: ref.replace(":", "__") for ref in FEATURES}
    burst = df[cols["user_spend:amount_sum_1h"]].fill_null(0).to_numpy()
    count = df[cols["user_txn_count:txn_count_24h"]].fill_null(0).to_numpy()
    age = df[cols["user_profile:account_age_days"]].fill_null(1000).to_numpy()
    ratio = df[cols["txn_now:amount_over_mean_24h"]].fill_null(1.0).to_numpy()
    logit = -2.5 + 0.004 * burst + 0.01 * count - 0.001 * age + 0.3 * np.minimum(ratio, 5)
    df = df.with_columns(pl.Series("is_fraud", (rng.random(n) < 1 / (1 + np.exp(-logit)))
                                   .astype(np.int8)))
    path = settings.home / "train.parquet"
    write_training_set(df, path, built.fingerprint)
    print(f"training set: {df.height} rows x {len(FEATURES)} features, "
          f"fraud rate {df['is_fraud'].mean():.3f}, fingerprint {built.fingerprint[:16]} "
          f"-> {path}")
    return path


def _serve_and_score(settings) -> None:
    """Score live users over HTTP with this request's amount, then the same users, time and
    amounts through training_set() and the model itself: the scores must be equal."""
    import lightgbm as lgb

    from features import training_set
    from features.registry import load_module
    from serving.client import ScorerClient
    from serving.registry import ModelRegistry
    from tessera.local import free_port

    port = free_port()
    proc = subprocess.Popen([*TESSERA, "serve", "--model", "fraud", "--port", str(port),
                             "--repo", REPO], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    client = ScorerClient(f"http://127.0.0.1:{port}")
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if client.healthy() and client.ready():
                    break
            except Exception:  # noqa: BLE001 - still starting
                time.sleep(0.3)
        else:
            raise SystemExit("scorer did not become ready")
        users = ["u0", "u1", "u7", "u42"]
        amounts = [12.5, 250.0, 3000.0, 80.0]
        at_ms = time.time_ns() // 1_000_000
        r = client.predict("fraud", [{"user_id": u} for u in users],
                           request_features=[{"amount": a} for a in amounts], at=at_ms)
        print(f"POST /v1/predict/fraud for {users}, amounts {amounts}:")
        print(json.dumps(r, indent=1)[:1500])
    finally:
        proc.terminate()
        proc.wait(10)
    spine = pl.DataFrame({"user_id": users, "ts": [at_ms * 1000] * len(users),
                          "amount": amounts}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")))
    off = training_set(spine, FEATURES, repo=load_module(REPO), settings=settings)
    x = off.select([pl.col(ref.replace(":", "__")).cast(pl.Float64) for ref in FEATURES])
    mv = ModelRegistry(settings.models_dir).get("fraud", "champion")
    want = lgb.Booster(model_str=mv.model_text).predict(x.to_numpy())
    served = [p["score"] for p in r["predictions"]]
    skew = max(abs(a - b) for a, b in zip(served, want, strict=True))
    print(f"served scores vs the model on training_set() rows for the same users, time and "
          f"amounts: max |difference| = {skew:.2e}")
    if skew > 1e-9:
        raise SystemExit("online/offline skew in the served scores")


ENV = dict(os.environ, TESSERA_HOME=str(HOME), PYTHONPATH=str(ROOT))
ENV.pop("KAFKA_BOOTSTRAP", None) if not os.environ.get("KAFKA_BOOTSTRAP") else None
ENV.pop("REDIS_URL", None) if not os.environ.get("REDIS_URL") else None

if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
