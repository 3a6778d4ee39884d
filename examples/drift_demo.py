"""The MLOps loop on synthetic traffic: drift is injected, the monitor alerts, a retrain runs as
a shadow and is promoted because it is better; the dashboard shows each step.

    .venv/bin/python examples/drift_demo.py [--home DIR] [--screenshots DIR]

Real parts: the model registry and LightGBM training, the deployment spec and audit log, the
monitor, the experiment report, ``Retrainer`` and the ``/ui`` page. Stand-ins: requests are
scored in batches here instead of through the HTTP scorer, and the prediction/outcome logs are
written straight to Parquet in the sink's layout instead of through Kafka.

Story: model v1 is trained when ``amount`` ~ N(0, 1) and risk rises with ``amount``. Then the
world changes: ``amount`` moves up by one standard deviation and risk now follows ``velocity``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.settings import Settings  # noqa: E402
from serving.experiments.records import OUTCOME_SCHEMA, PREDICTION_SCHEMA  # noqa: E402
from serving.experiments.report import dataset_dirs  # noqa: E402
from serving.experiments.sink import import_frame  # noqa: E402
from serving.experiments.spec import DeploymentSpec, DeploymentStore  # noqa: E402
from serving.monitoring.alerts import Alerter  # noqa: E402
from serving.monitoring.retrain import Retrainer, RetrainPlan  # noqa: E402
from serving.monitoring.routes import run_monitor  # noqa: E402
from serving.monitoring.sources import PredictionLog, registry_lookup  # noqa: E402
from serving.registry import ModelRegistry  # noqa: E402
from serving.registry.training import train  # noqa: E402

MODEL = "fraud"
COLUMNS = ["txn__amount", "txn__velocity", "user__age_days", "user__txn_count"]
S = 1_000_000


def world(rng: np.random.Generator, n: int, drifted: bool) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix (columns as ``COLUMNS``) and labels, before or after the change."""
    amount = rng.normal(1.0 if drifted else 0.0, 1.0, n)
    velocity = rng.normal(0.0, 1.0, n)
    age = rng.exponential(300.0, n)
    count = rng.poisson(5.0, n).astype(float)
    logit = (1.8 * velocity - 0.3 * amount if drifted else 1.8 * amount - 0.3 * velocity) - 1.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return np.column_stack([amount, velocity, age, count]), y


def training_set(path: Path, x: np.ndarray, y: np.ndarray, t0: int) -> Path:
    frame = {c: x[:, j] for j, c in enumerate(COLUMNS)}
    pl.DataFrame({"ts": t0 + np.arange(len(y)) * S, "label": y, **frame}).write_parquet(path)
    return path


class Logs:
    """Prediction and outcome Parquet files plus manifests, the layout the Kafka sink writes."""

    def __init__(self, offline_dir: Path) -> None:
        self.dirs = dataset_dirs(offline_dir)

    def requests(self, registry, spec, x, y, t0, rng, labelled=0.5) -> None:
        """Score ``x`` with the champion and every shadow; log predictions and some labels."""
        n = len(x)
        rid = [f"r{t0}-{i}" for i in range(n)]
        ts = (t0 + np.arange(n) * 10_000).tolist()
        rows = []
        for role, version in [("champion", spec.champion)] + [("shadow", v) for v in spec.shadows]:
            mv = registry.get(MODEL, version)
            score = mv.booster().predict(x)
            rows.append(
                {
                    "request_id": rid,
                    "ts": ts,
                    "entity_key": [f"user=u{i % 5000}" for i in range(n)],
                    "model": [MODEL] * n,
                    "version": [version] * n,
                    "role": [role] * n,
                    "arm": [role] * n,
                    "score": score.tolist(),
                    "latency_ms": [0.5] * n,
                    "error": [None] * n,
                    "features_hash": [""] * n,
                    "features": x.tolist(),
                }
            )
        table = pa.concat_tables([pa.Table.from_pydict(r, schema=PREDICTION_SCHEMA) for r in rows])
        import_frame(self.dirs[0], pl.from_arrow(table))
        keep = rng.random(n) < labelled
        out = {
            "label": y[keep].tolist(),
            "ts": [t + 60 * S for t, k in zip(ts, keep, strict=True) if k],
            "request_id": [r for r, k in zip(rid, keep, strict=True) if k],
            "entity_key": [None] * int(keep.sum()),
            "model": [MODEL] * int(keep.sum()),
        }
        import_frame(self.dirs[1], pl.from_arrow(pa.Table.from_pydict(out, schema=OUTCOME_SCHEMA)))


def run(home: Path, scale: float = 1.0, screenshots: Path | None = None, say=print) -> dict:
    """The whole story in ``home``; returns timings (seconds) and what happened."""
    settings = Settings(home=home)
    models, offline = settings.models_dir, settings.offline_dir
    registry, store = ModelRegistry(models), DeploymentStore(models)
    rng = np.random.default_rng(7)
    n_train, n_live = int(20_000 * scale), int(4_000 * scale)
    shots = _Screens(settings, registry, screenshots)
    out: dict = {"scale": scale}

    t0 = 1_750_000_000 * S
    x, y = world(rng, n_train, drifted=False)
    first = train(training_set(home / "train_v1.parquet", x, y, t0), "label", seed=0)
    registry.register(MODEL, first.model_text, first.metadata())
    registry.set_alias(MODEL, "champion", "1", why="first model")
    store.save(DeploymentSpec(MODEL, "1"), why="first deployment", who="demo")
    say(f"1. trained and deployed {MODEL} v1 (holdout AUC {first.metrics['auc']:.3f})")

    logs, alerter = Logs(offline), Alerter()
    lookup, read = registry_lookup(registry), PredictionLog(offline).read
    x, y = world(rng, n_live, drifted=False)
    logs.requests(registry, store.current(MODEL), x, y, t0 + 10**6 * S, rng)
    r = run_monitor(MODEL, lookup, read, rows=2000, alerter=alerter)
    say(f"2. {n_live} requests before the change: monitor status {r['status']}")
    out["status_before"] = r["status"]

    x, y = world(rng, n_live, drifted=True)
    logs.requests(registry, store.current(MODEL), x, y, t0 + 2 * 10**6 * S, rng)
    t_alert = time.perf_counter()
    r = run_monitor(MODEL, lookup, read, rows=2000, alerter=alerter)
    out["status_after"] = r["status"]
    out["alerts"] = r["alerts"]
    say(
        f"3. drift injected: monitor status {r['status']}, alerts "
        + ", ".join(f"{a['column']}:{a['kind']}" for a in r["alerts"])
    )
    shots.take("1-drift-alert")

    t = time.perf_counter()
    xf, yf = world(rng, n_train, drifted=True)
    fresh = training_set(home / "train_fresh.parquet", xf, yf, t0 + 2 * 10**6 * S)
    plan = RetrainPlan(MODEL, fresh, "label")
    state = Retrainer(registry, store, offline, models).start(plan)
    out["retrain_s"] = time.perf_counter() - t
    v2 = state["version"]
    say(
        f"4. retrained on fresh data: v{v2} (parent v{state['parent']}) runs as a shadow "
        f"[{out['retrain_s']:.1f} s]"
    )
    shots.take("2-shadow")

    x, y = world(rng, n_live, drifted=True)
    logs.requests(registry, store.current(MODEL), x, y, t0 + 3 * 10**6 * S, rng)
    t = time.perf_counter()
    state = Retrainer(registry, store, offline, models).decide(MODEL, state["run"])
    out["decide_s"] = time.perf_counter() - t
    out["alert_to_promotion_compute_s"] = time.perf_counter() - t_alert
    out["final_step"] = state["step"]
    out["champion"] = registry.resolve(MODEL, "champion")
    say(
        f"5. {n_live} requests scored by v1 and shadow v{v2}: {state['step']} -- "
        f"{state.get('reason')} [{out['decide_s']:.1f} s]"
    )
    shots.take("3-promoted")
    say(
        f"   champion is now v{out['champion']}; spec revision "
        f"{store.current(MODEL).revision}; audit entries {len(store.audit_log(MODEL))}"
    )
    shots.close()
    return out


class _Screens:
    """Dashboard screenshots after each step (needs playwright and Chromium; else a no-op)."""

    def __init__(self, settings: Settings, registry, folder: Path | None) -> None:
        self.folder, self.page = folder, None
        if folder is None:
            return
        import threading

        import uvicorn
        from fastapi import FastAPI
        from playwright.sync_api import sync_playwright

        from serving.dashboard.routes import dashboard_router
        from serving.dashboard.sources import from_settings

        app = FastAPI()
        app.include_router(
            dashboard_router(from_settings(settings, registry=registry), refresh_s=None)
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        )
        threading.Thread(target=self.server.run, daemon=True).start()
        while not self.server.started:
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/ui"
        self.pw = sync_playwright().start()
        self.browser = self.pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        self.page = self.browser.new_page(viewport={"width": 1400, "height": 1000})
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, name: str) -> None:
        if self.page is None:
            return
        self.page.goto(self.url)
        self.page.wait_for_function("document.body.dataset.charts !== undefined")
        self.page.screenshot(path=str(self.folder / f"demo-{name}.png"), full_page=True)

    def close(self) -> None:
        if self.page is None:
            return
        self.browser.close()
        self.pw.stop()
        self.server.should_exit = True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", type=Path, default=None, help="home folder (default: a temp dir)")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--screenshots", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp)
        out = run(home, args.scale, args.screenshots)
    print(json.dumps({k: v for k, v in out.items() if k != "alerts"}, indent=2))


if __name__ == "__main__":
    main()
