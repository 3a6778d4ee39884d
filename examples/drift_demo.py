"""The MLOps loop on live traffic, through the real path end to end.

    .venv/bin/python examples/drift_demo.py [--home DIR] [--users N] [--screenshots DIR]

Card payments are published to Kafka -> ``tessera worker`` computes the windowed features into
Redis and the offline event log -> ``tessera serve`` (the HTTP scorer, its experiment router
logging every prediction with its feature vector to the ``tessera-predictions`` topic) scores live
users -> ``tessera experiment sink`` copies predictions and the outcomes (labels published to the
``outcomes`` topic, keyed by user and time) to Parquet -> ``GET /v1/monitor/fraud`` compares the
window with v1's training reference -> retraining builds a point-in-time training set from the
outcome log (``serving.monitoring.spine``, what ``tessera retrain fraud`` does by default), runs
v2 as a shadow, and ``tessera retrain fraud`` promotes it once the experiment report says better.
Uses ``KAFKA_BOOTSTRAP`` / ``REDIS_URL`` when set (``make demo`` passes its own), else starts a
broker and Redis under ``--home``.

Story: fraudsters used to buy big and often; v1 learns that. Then they switch to many small
"card testing" payments spread over the week while prices rise for everyone else: the amount
features move (the monitor alerts), v1 now flags the wrong users, and a retrain on the labelled
traffic since the change beats it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.event_schema import us_to_iso  # noqa: E402
from features.kafka_admin import create_topics  # noqa: E402
from features.offline.event_log import EventLog  # noqa: E402
from features.online.layout import applied_offset, offset_key  # noqa: E402
from features.registry import apply, load_module  # noqa: E402
from features.settings import Settings  # noqa: E402
from serving.client import ScorerClient  # noqa: E402
from serving.experiments.kafka_log import (  # noqa: E402
    OUTCOMES_TOPIC,
    PREDICTIONS_TOPIC,
    KafkaRecordLog,
)
from serving.experiments.records import OutcomeRecord, now_us  # noqa: E402
from serving.experiments.spec import DeploymentSpec, DeploymentStore  # noqa: E402
from serving.monitoring.retrain import Retrainer, RetrainPlan, fresh_training_set  # noqa: E402
from serving.monitoring.sources import PredictionLog  # noqa: E402
from serving.monitoring.spine import outcome_training_set  # noqa: E402
from serving.registry import ModelRegistry  # noqa: E402
from serving.registry.training import train  # noqa: E402
from streams.producer import Publisher  # noqa: E402
from tessera.local import LocalServices, free_port  # noqa: E402

MODEL, GROUP = "fraud", "drift-worker"
HOUR_US, DAY_US = 3_600_000_000, 86_400_000_000
PARAMS = {"num_iterations": 80, "num_leaves": 15, "min_data_in_leaf": 20, "num_threads": 1}
REPO = '''
from features import Aggregate, Entity, EventSource, FeatureView

user = Entity("user", keys=["user_id"])
payments = EventSource(name="payments", topic="{topic}", partitions=2, timestamp_field="ts",
                       entity=user, schema={{"user_id": "string", "amount": "float",
                                             "ts": "timestamp"}})
pay_count = FeatureView("pay_count", payments, [Aggregate("count", ["1h", "24h", "7d"])])
pay_amount = FeatureView("pay_amount", payments, [
    Aggregate("sum", ["24h"], field="amount"), Aggregate("mean", ["24h", "7d"], field="amount"),
    Aggregate("max", ["7d"], field="amount"),
])
'''


def behaviour(rng, prefix: str, n: int, now: int, drifted: bool) -> tuple[list[dict], dict]:
    """Payments of users ``{prefix}0..`` over the past week and each user's fraud label."""
    events, labels = [], {}
    for i in range(n):
        risky = rng.random() < 0.2
        if not drifted:  # fraud: big and often, lately; others: a few mid-size payments a week
            k, span, mu, sd = (12, 2, 4.2, 0.6) if risky else (5, 7, 3.2, 0.8)
        else:  # fraud: many small payments over the week; prices up for everyone else
            k, span, mu, sd = (8, 7, 1.8, 0.5) if risky else (5, 7, 4.0, 0.8)
        user = f"{prefix}{i}"
        for _ in range(int(rng.poisson(k)) + 1):
            ts = now - int(rng.integers(1, span * DAY_US))
            amount = round(float(rng.lognormal(mu, sd)), 2)
            events.append({"user_id": user, "amount": amount, "ts": us_to_iso(ts)})
        labels[user] = float(rng.random() < (0.7 if risky else 0.05))
    return events, labels


class Live:
    """The running pieces: worker, scorer and sink as subprocesses, plus producers."""

    def __init__(self, home: Path, repo_path: Path, settings: Settings) -> None:
        self.home, self.repo_path, self.settings = home, repo_path, settings
        self.repo = load_module(repo_path)
        self.source = self.repo.sources["payments"]
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ, TESSERA_HOME=str(home), PYTHONPATH=str(ROOT),
                        KAFKA_BOOTSTRAP=settings.kafka_bootstrap, REDIS_URL=settings.redis_url)
        from features.online.connection import connect_settings

        self.redis = connect_settings(settings)
        create_topics([PREDICTIONS_TOPIC, OUTCOMES_TOPIC], settings.kafka_bootstrap)
        self.outcomes = KafkaRecordLog(settings.kafka_bootstrap, OUTCOMES_TOPIC)
        self.worker_metrics = free_port()

    def spawn(self, name: str, *args: str, **env: str) -> subprocess.Popen:
        log = open(self.home / f"{name}.log", "wb")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen([sys.executable, "-m", "tessera", *args], stdout=log,
                                stderr=subprocess.STDOUT, env={**self.env, **env}, cwd=self.home)
        self.procs.append(proc)
        return proc

    def start_worker(self) -> None:
        self.spawn("worker", "worker", "--repo", str(self.repo_path), "--group", GROUP,
                   "--max-records", "5000", "--metrics-port", str(self.worker_metrics))

    def start_sink(self) -> None:
        self.spawn("sink", "experiment", "sink", "--idle", "0")

    def start_scorer(self, cache_s: float = 10) -> ScorerClient:
        port = free_port()
        self.spawn("scorer", "serve", "--model", MODEL, "--port", str(port), "--repo",
                   str(self.repo_path), TESSERA_SERVE__LOG_VECTORS="true",
                   TESSERA_SERVE__DASHBOARD_METRICS=(
                       f'["http://127.0.0.1:{self.worker_metrics}/metrics"]'),
                   TESSERA_SERVE__DASHBOARD_CACHE_S=str(cache_s))
        self.url = f"http://127.0.0.1:{port}"
        client = ScorerClient(self.url, timeout_s=30)
        _wait(lambda: _ok(client.ready), 60, "the scorer to be ready", self.procs[-1])
        return client

    def publish(self, events: list[dict]) -> None:
        """Publish and wait until the worker has them in Redis and in the offline log."""
        with Publisher(self.source, self.settings.kafka_bootstrap) as pub:
            report = pub.publish(events)
        log, topic = EventLog(self.settings.offline_dir), self.source.topic

        def done() -> bool:
            for p, last in report.last_offsets.items():
                applied = self.redis.get(offset_key(GROUP, topic, p))
                logged = log.committed_offset(self.source, topic, p)
                if applied_offset(applied) < last or logged is None or logged < last:
                    return False
            return True

        _wait(done, 120, "the worker to apply the payments", self.procs[0])

    def label(self, labels: dict[str, float]) -> None:
        """Outcomes observed after the predictions, by user and time (the as-of join finds the
        prediction each answers)."""
        for user, y in labels.items():
            self.outcomes.log(OutcomeRecord(y, now_us(), entity_key=user, model=MODEL))

    def close(self) -> None:
        self.outcomes.close()
        self.redis.close()
        for p in reversed(self.procs):
            if p.poll() is None:  # the sink flushes and commits on Ctrl-C
                p.send_signal(signal.SIGINT if p.args[3] == "experiment" else signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def _ok(fn) -> bool:
    try:
        return fn()["status"] == 200
    except Exception:  # noqa: BLE001 - still starting
        return False


def _wait(cond, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"waiting for {what}: {proc.args[3]} exited ({proc.returncode})")
        time.sleep(0.1)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


def _score(live: Live, client: ScorerClient, users: list[str], batch: int = 100) -> dict:
    """Score ``users`` over HTTP; wait until the sink has committed every prediction."""
    before = _served(live)
    versions: dict[str, int] = {}
    for lo in range(0, len(users), batch):
        r = client.predict(MODEL, [{"user_id": u} for u in users[lo : lo + batch]])
        for p in r["predictions"]:
            versions[p["version"]] = versions.get(p["version"], 0) + 1
    _wait(lambda: _served(live) >= before + len(users), 60, "the sink to log the predictions")
    return versions


def _monitor(client: ScorerClient) -> dict:
    return client.http.get(f"/v1/monitor/{MODEL}").json()


def _served(live: Live, role: str | None = None) -> int:
    """Predictions of the model in the log: served ones, or those of ``role``."""
    df = PredictionLog(live.settings.offline_dir).read().filter(pl.col("model") == MODEL)
    return df.filter(pl.col("role") != "shadow" if role is None
                     else pl.col("role") == role).height


def run(
    home: Path, users: int = 1000, screenshots: Path | None = None, say=print, probe: int = 0
) -> dict:
    """The whole story under ``home``; returns timings (seconds) and what happened. With
    ``probe`` the drifted requests are sent ``probe`` at a time, the monitor asked after each
    chunk, and ``alert_after`` = drifted predictions logged when it first alerted."""
    t_start = time.perf_counter()
    settings = Settings.from_env(home)
    services = LocalServices(home)  # a broker / Redis of its own for what is not configured
    if not settings.kafka_bootstrap or not settings.redis_url:
        services.start()
        settings = Settings(home, services.bootstrap, services.redis_url)
    repo_path = home / "drift_repo.py"
    repo_path.write_text(REPO.format(topic=f"payments-{uuid.uuid4().hex[:8]}"))
    live = Live(home, repo_path, settings)
    apply(live.repo, settings)
    registry, store = ModelRegistry(settings.models_dir), DeploymentStore(settings.models_dir)
    rng = np.random.default_rng(7)
    out: dict = {"users_per_phase": users}
    shots = _Screens(screenshots)
    try:
        live.start_worker()
        live.start_sink()
        now = now_us()
        events, labels = behaviour(rng, "t", 2 * users, now, drifted=False)
        live.publish(events)
        spine = pl.DataFrame({"user_id": list(labels), "ts": [now] * len(labels),
                              "label": list(labels.values())})
        features = [f"{v.name}:{f.name}" for v in live.repo.views.values() for f in v.features]
        spine = spine.with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
        path = fresh_training_set(spine, features, home / "train", 30, repo=live.repo,
                                  settings=settings)
        first = train(path, "label", params=PARAMS, seed=0)
        registry.register(MODEL, first.model_text, first.metadata())
        registry.set_alias(MODEL, "champion", "1", why="first model")
        store.save(DeploymentSpec(MODEL, "1"), why="first deployment", who="demo")
        say(f"1. {len(events)} payments -> worker -> point-in-time training set -> {MODEL} v1 "
            f"(holdout AUC {first.metrics['auc']:.3f}); serving it over HTTP")
        client = live.start_scorer(cache_s=10 if screenshots is None else 0.5)  # one per step
        shots.open(live.url)

        def phase(prefix: str, drifted: bool, chunk: int = 0) -> dict:
            events, labels = behaviour(rng, prefix, users, now_us(), drifted)
            live.publish(events)
            names, versions = list(labels), {}
            for lo in range(0, users, chunk or users):
                for v, n in _score(live, client, names[lo : lo + (chunk or users)]).items():
                    versions[v] = versions.get(v, 0) + n
                if chunk and "alert_after" not in out and _monitor(client)["status"] == "alert":
                    out["alert_after"] = lo + chunk
            live.label(labels)
            return versions

        phase("a", drifted=False)
        r = _monitor(client)
        out["status_before"] = r["status"]
        say(f"2. {users} users' payments and requests before the change: monitor {r['status']} "
            f"({r['rows']} predictions)")

        t_cut = now_us()
        t_drift = time.perf_counter()
        phase("b", drifted=True, chunk=probe)
        r = _monitor(client)
        out["alert_s"] = time.perf_counter() - t_drift
        out["status_after"], out["alerts"] = r["status"], r["alerts"]
        say(f"3. fraud changes shape: monitor {r['status']} over the newest {r['rows']} "
            "predictions: " + ", ".join(sorted(f"{a['column']} {a['kind']}" for a in r["alerts"]))
            + f" [{out['alert_s']:.1f} s from publishing the drifted payments]")
        say("   the scorer's alert log line: " + _first_alert(home / "scorer.log")[:220] + " ...")
        shots.take("1-drift-alert")

        t = time.perf_counter()
        _wait(lambda: _labelled(settings) >= 2 * users, 60, "the outcomes")
        t_now = now_us()  # `tessera retrain fraud --days D`, D = the time since the change
        fresh = outcome_training_set(MODEL, registry, settings, (t_now - t_cut) / DAY_US,
                                     repo=live.repo, now_us=t_now)
        state = Retrainer(registry, store, settings.offline_dir, settings.models_dir).start(
            RetrainPlan(MODEL, fresh, "label"))
        out["retrain_s"] = time.perf_counter() - t
        v2 = state["version"]
        rows = pl.read_parquet(fresh).height
        say(f"4. retrained from the outcome log ({rows} labelled predictions since the change, "
            f"features rebuilt point-in-time): v{v2} (parent v{state['parent']}) runs as a "
            f"shadow [{out['retrain_s']:.1f} s]")
        shots.take("2-shadow")

        time.sleep(1.5)  # the router re-reads the spec within a second
        phase("c", drifted=True)
        _wait(lambda: _labelled(settings) >= 3 * users, 60, "the outcomes")
        # the shadow's predictions reach the log later (its own process, chunked): the decision
        # must see them all, or it may judge on a part
        _wait(lambda: _served(live, role="shadow") >= users, 60, "the shadow's predictions")
        t = time.perf_counter()
        decided = subprocess.run([sys.executable, "-m", "tessera", "retrain", MODEL],
                                 capture_output=True, text=True, env=live.env, cwd=home)
        out["decide_s"] = time.perf_counter() - t
        if decided.returncode != 0:
            raise SystemExit(f"tessera retrain failed:\n{decided.stdout}{decided.stderr}")
        state = json.loads(decided.stdout)
        out["final_step"], out["reason"] = state["step"], state.get("reason")
        out["alert_to_promotion_s"] = time.perf_counter() - t_drift
        say(f"5. {users} more requests, scored by v1 and shadow v{v2}; `tessera retrain "
            f"{MODEL}`: {state['step']} -- {state.get('reason')} [{out['decide_s']:.1f} s]")
        out["champion"] = registry.resolve(MODEL, "champion")
        time.sleep(1.5)  # the scorer follows the champion alias within a second
        versions = phase("d", drifted=True)
        r = _monitor(client)
        out["status_promoted"], out["served_after"] = r["status"], versions
        say(f"6. champion is now v{out['champion']}: the next {users} requests were served by "
            f"{versions}; monitor {r['status']} against v{r.get('version')}'s reference; "
            f"audit entries {len(store.audit_log(MODEL))}")
        shots.take("3-promoted")
    finally:
        shots.close()
        live.close()
        services.stop()
    out["total_s"] = time.perf_counter() - t_start
    return out


def _first_alert(log: Path) -> str:
    lines = [x for x in log.read_text().splitlines() if "tessera.monitor.alert" in x]
    return lines[0] if lines else "(none yet)"


def _labelled(settings: Settings) -> int:
    from serving.experiments.records import OUTCOME_SCHEMA
    from serving.experiments.report import dataset_dirs
    from serving.experiments.sink import read_dataset

    return read_dataset(dataset_dirs(settings.offline_dir)[1], OUTCOME_SCHEMA).height


class _Screens:
    """Screenshots of the scorer's own ``/ui`` after each step (playwright + Chromium)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder, self.page = folder, None

    def open(self, base_url: str) -> None:
        if self.folder is None:
            return
        from playwright.sync_api import sync_playwright

        self.url = f"{base_url}/ui"
        self.pw = sync_playwright().start()
        self.browser = self.pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        self.page = self.browser.new_page(viewport={"width": 1400, "height": 1000})
        self.folder.mkdir(parents=True, exist_ok=True)

    def take(self, name: str) -> None:
        if self.page is None:
            return
        self.page.goto(self.url)
        self.page.wait_for_function("document.body.dataset.charts !== undefined")
        self.page.screenshot(path=str(self.folder / f"demo-{name}.png"), full_page=True)

    def close(self) -> None:
        if self.page is not None:
            self.browser.close()
            self.pw.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, default=None, help="home folder (default: a temp dir)")
    ap.add_argument("--users", type=int, default=1000, help="users per traffic phase")
    ap.add_argument("--screenshots", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # slow-poll notes from a busy machine
    with tempfile.TemporaryDirectory() as tmp:
        home = (args.home or Path(tmp)).resolve()
        home.mkdir(parents=True, exist_ok=True)
        out = run(home, args.users, args.screenshots)
    print(json.dumps({k: v for k, v in out.items() if k != "alerts"}, indent=2))


if __name__ == "__main__":
    main()
