"""Retraining on a fresh point-in-time training set built from the offline store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pyarrow as pa

from features import Aggregate, Entity, EventSource, FeatureRepo, FeatureView
from features.offline.event_log import EventLog
from features.offline.training_set import read_fingerprint
from features.settings import Settings
from serving.experiments.spec import DeploymentStore
from serving.monitoring.retrain import Retrainer, RetrainPlan, fresh_training_set
from serving.registry import ModelRegistry
from serving.registry.training import train

DAY = 86_400_000_000
T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1_000_000)
USER = Entity("user", ["user_id"])
SOURCE = EventSource(
    "txns", {"user_id": "string", "amount": "float", "ts": "timestamp"}, "ts", entity=USER
)
VIEW = FeatureView(
    "user_txn", SOURCE, [Aggregate("count", ["1h", "24h"]), Aggregate("sum", ["24h"], "amount")]
)
REPO = FeatureRepo.of([VIEW])
REFS = [f"user_txn:{f.name}" for f in VIEW.features]


def _world(tmp_path):
    rng = np.random.default_rng(3)
    settings = Settings(tmp_path)
    users = [f"u{i}" for i in range(40)]
    risky = set(users[:10])  # risky users buy a lot, and their requests are often fraud
    n = 4000
    who = rng.choice(users, n, p=[0.05 if u in risky else 0.5 / 30 for u in users])
    ts = T0 + rng.integers(0, 10 * DAY, n)
    table = pa.table(
        {
            "user_id": who.tolist(),
            "amount": rng.exponential(30.0, n).tolist(),
            "ts": pa.array(ts.tolist(), pa.timestamp("us", tz="UTC")),
            "_offset": list(range(n)),
            "_ingest_ts": pa.array(ts.tolist(), pa.timestamp("us", tz="UTC")),  # on time
        }
    )
    EventLog(settings.offline_dir).append(SOURCE, table, topic="txns", partition=0)
    m = 3000
    su = rng.choice(users, m)
    spine = pl.DataFrame(
        {
            "user_id": su.tolist(),
            "ts": (T0 + DAY + rng.integers(0, 9 * DAY, m)).tolist(),
            "label": [float(rng.random() < (0.6 if u in risky else 0.1)) for u in su],
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    spine.write_parquet(tmp_path / "spine.parquet")
    return settings, tmp_path / "spine.parquet"


def test_retrain_builds_a_moving_window_training_set_with_its_fingerprint(tmp_path):
    settings, spine = _world(tmp_path)
    models = settings.models_dir
    registry = ModelRegistry(models)
    build = {"repo": REPO, "settings": settings}
    first = fresh_training_set(spine, REFS, tmp_path / "sets", days=30, **build)
    v1 = train(first, "label")
    registry.register("fraud", v1.model_text, v1.metadata())
    registry.set_alias("fraud", "champion", "1")

    fresh = fresh_training_set(spine, registry.get("fraud").features, tmp_path / "sets", 3, **build)
    rows, all_rows = pl.read_parquet(fresh), pl.read_parquet(first)
    newest = all_rows["ts"].max()
    assert 0 < rows.height < all_rows.height
    assert (rows["ts"] > newest - timedelta(days=3)).all()
    assert rows["user_txn__count_24h"].sum() > 0  # features really came from the event log
    again = fresh_training_set(spine, REFS, tmp_path / "sets", 3, **build)
    assert again == fresh  # same spine, range and store: same file

    r = Retrainer(registry, DeploymentStore(models), settings.offline_dir, models)
    state = r.start(RetrainPlan("fraud", fresh, "label"))
    meta = registry.metadata("fraud", state["version"])
    assert meta["training_set"]["fingerprint"] == read_fingerprint(fresh)
    assert meta["parent"] == "1" and meta["features"] == REFS
    assert r.start(RetrainPlan("fraud", again, "label"))["run"] == state["run"]


def test_retrain_command_with_a_spine_uses_the_applied_repo(tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from features.registry import apply
    from tessera import cli_monitor

    settings, spine = _world(tmp_path)
    apply(REPO, settings)
    registry = ModelRegistry(settings.models_dir)
    first = fresh_training_set(spine, REFS, tmp_path / "sets", 30, repo=REPO, settings=settings)
    v1 = train(first, "label")
    registry.register("fraud", v1.model_text, v1.metadata())
    registry.set_alias("fraud", "champion", "1")

    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    app = typer.Typer()
    cli_monitor.register(app)
    args = ["retrain", "fraud", "--label", "label", "--spine", str(spine), "--days", "3"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert '"step": "shadow"' in r.output
    meta = registry.metadata("fraud", "2")
    built = list((settings.models_dir / "fraud" / "retrain").glob("training-*.parquet"))
    assert len(built) == 1 and meta["training_set"]["fingerprint"] == read_fingerprint(built[0])
