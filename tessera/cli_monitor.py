"""``tessera monitor report NAME``: drift and data quality of a model's latest predictions."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import polars as pl
import typer

from features.settings import Settings

WEBHOOK = typer.Option(None, envvar="TESSERA_ALERT_WEBHOOK", help="POST alerts here")


def register(app: typer.Typer) -> None:
    monitor = typer.Typer(help="Model monitoring: drift and data quality vs training time.")
    app.add_typer(monitor, name="monitor")

    @monitor.command("report")
    def report(
        name: str = typer.Argument(..., help="model name"),
        rows: int = typer.Option(5000, help="window: the newest N predictions"),
        seconds: float | None = typer.Option(None, help="window: only the last S seconds"),
        predictions: Path | None = typer.Option(
            None,
            help="Parquet file or folder of logged predictions (default: the prediction "
            "log under $TESSERA_HOME/offline)",
        ),
        reference: Path | None = typer.Option(
            None, help="reference JSON (default: the champion's in the model registry, else "
            "<models>/NAME/reference.json)"
        ),
        webhook: str | None = WEBHOOK,
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    ) -> None:
        """Compare the newest predictions of NAME with its training-time reference.

        Exits 1 when any alert is on, so a cron job or CI step can act on it.
        """
        from serving.monitoring.alerts import Alerter
        from serving.monitoring.report import format_report
        from serving.monitoring.routes import run_monitor
        from serving.monitoring.sources import PredictionLog, default_lookup, load_reference

        settings = Settings.from_env()
        lookup = default_lookup(settings.models_location)
        if reference is not None:
            lookup = partial(load_reference, reference)
        if predictions is None:
            read = PredictionLog(settings.offline_location).read
        else:
            src = str(predictions / "*.parquet") if predictions.is_dir() else str(predictions)
            read = lambda: pl.read_parquet(src)  # noqa: E731
        r = run_monitor(
            name, lookup, read, rows=rows, seconds=seconds, alerter=Alerter(webhook_url=webhook)
        )
        typer.echo(json.dumps(r, indent=2) if as_json else format_report(r))
        if r["alerts"]:
            raise typer.Exit(1)

    @monitor.command("watch")
    def watch(
        names: list[str] = typer.Argument(None, help="models (default: every registered one)"),
        every: float = typer.Option(60.0, help="seconds between checks"),
        rows: int = typer.Option(5000, help="window: the newest N predictions"),
        webhook: str | None = WEBHOOK,
        guard: bool = typer.Option(
            False,
            help="also enforce the statistical guardrails: stop worse arms, retire worse "
            "shadows, roll back a promoted champion found worse than the one it replaced",
        ),
        segment: str | None = typer.Option(
            None, help="also alert when one segment of this column degrades while the total holds"
        ),
        segments: str | None = typer.Option(
            None, help="Parquet lookup with request_id or entity_key and the --segment column"
        ),
    ) -> None:
        """Check models every EVERY seconds; alerts go to the log, /metrics and the webhook.

        Run one watcher per deployment (not one per scorer worker), or alerts repeat.
        """
        import time

        from serving.monitoring.alerts import Alerter
        from serving.monitoring.sources import PredictionLog, default_lookup
        from serving.monitoring.watch import ExperimentGuard, MonitorWatch
        from serving.registry import ModelRegistry

        settings = Settings.from_env()
        registry = ModelRegistry(settings.models_location)
        chosen = (lambda: list(names)) if names else registry.models
        seg_watches = ()
        if segment is not None:
            import polars as pl

            from serving.experiments.report import labelled_predictions
            from serving.monitoring.watch import SegmentWatch

            lookup = pl.read_parquet(segments) if segments else None
            seg_watches = tuple(
                SegmentWatch(
                    n,
                    lambda n=n: labelled_predictions(
                        settings.offline_location, n, segment_col=segment, segments=lookup
                    ),
                    segment,
                )
                for n in chosen()
            )
        w = MonitorWatch(
            chosen,
            default_lookup(settings.models_location),
            PredictionLog(settings.offline_location).read,
            Alerter(webhook_url=webhook),
            interval_s=every,
            rows=rows,
            guard=ExperimentGuard(
                settings.models_location, settings.offline_location, chosen, registry
            )
            if guard
            else None,
            segments=seg_watches,
        ).start()
        typer.echo(f"watching {', '.join(names) if names else 'every model'} every {every:g} s")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            w.stop()

    @monitor.command("ui")
    def ui(
        host: str = typer.Option("127.0.0.1", help="bind address"),
        port: int = typer.Option(8090, help="port"),
        metrics: list[str] = typer.Option(
            [], help="a /metrics URL (worker, scorer) to read freshness and throughput from"
        ),
        webhook: str | None = WEBHOOK,
    ) -> None:
        """Serve the dashboard (/ui) and GET /v1/monitor/{name} on their own.

        The scorer serves the same routers; this is for a machine without one.
        """
        import uvicorn
        from fastapi import FastAPI

        from serving.dashboard.routes import dashboard_router
        from serving.dashboard.sources import from_settings
        from serving.monitoring.alerts import Alerter
        from serving.monitoring.routes import monitor_router
        from serving.monitoring.sources import PredictionLog, default_lookup
        from serving.registry import ModelRegistry

        settings = Settings.from_env()
        app = FastAPI(title="Tessera monitor")
        registry = ModelRegistry(settings.models_location)
        app.include_router(dashboard_router(from_settings(settings, metrics, registry)))
        app.include_router(
            monitor_router(
                default_lookup(settings.models_location),
                PredictionLog(settings.offline_location).read,
                alerter=Alerter(webhook_url=webhook),
            )
        )
        typer.echo(f"dashboard on http://{host}:{port}/ui")
        uvicorn.run(app, host=host, port=port, log_level="warning")

    @app.command("retrain")
    def retrain(
        name: str = typer.Argument(..., help="model name"),
        label: str = typer.Option("label", help="label column"),
        training_set: Path | None = typer.Option(
            None, help="a ready point-in-time training set (Parquet)"
        ),
        spine: Path | None = typer.Option(
            None,
            help="entity keys + timestamp + label (Parquet) instead of the default spine: the "
            "champion's labelled predictions from the outcome log",
        ),
        days: float = typer.Option(30.0, help="the moving time range of the spine, in days"),
        timestamp: str = typer.Option(
            "ts", "--timestamp-column",
            help="timestamp column of --spine / --training-set (time-based holdout)"),
        seed: int = typer.Option(0, help="training seed"),
        alpha: float = typer.Option(0.05, help="promote when better at 1 - alpha confidence"),
        policy: Path | None = typer.Option(
            None, help="retrain only when this policy (on_drift, every_hours, after_labels) is due"
        ),
    ) -> None:
        """Retrain NAME with the champion's params, run it as a shadow, promote it when better.

        By default the training set is built from the offline store for the champion's labelled
        predictions (prediction log joined with outcomes) of the newest --days. Idempotent
        and resumable: run it again (e.g. from cron) to resume the same run and re-check the
        experiment until it promotes or retires the new version.
        """
        from serving.experiments.spec import DeploymentStore
        from serving.monitoring.errors import MonitorError
        from serving.monitoring.policy import Policy, due
        from serving.monitoring.retrain import (
            Retrainer,
            RetrainPlan,
            fresh_training_set,
            training_set_dir,
        )
        from serving.monitoring.spine import outcome_training_set
        from serving.registry import ModelRegistry

        settings = Settings.from_env()
        registry = ModelRegistry(settings.models_location)
        from serving.auth import actor

        r = Retrainer(
            registry,
            DeploymentStore(settings.models_location),
            settings.offline_location,
            settings.models_location,
            who=actor.local(),
        )
        runs = r.runs(name)
        open_runs = [s for s in runs if s["step"] in ("registered", "shadow")]
        if open_runs:  # an unfinished run is resumed whatever the policy says
            state = r.decide(name, open_runs[-1]["run"], alpha=alpha)
        else:
            if training_set is not None and spine is not None:
                raise MonitorError("give at most one of --training-set PATH or --spine PATH")
            if policy is not None:
                reason = _policy_reason(Policy.load(policy), name, settings, runs, registry, due)
                if reason is None:
                    typer.echo(f"{name}: no retrain due under {policy}")
                    return
                typer.echo(f"{name}: retrain due: {reason}")
            if spine is not None:
                training_set = fresh_training_set(
                    spine,
                    registry.get(name).features,
                    training_set_dir(settings, name),
                    days,
                    timestamp,
                    settings=settings,
                )
            elif training_set is None:
                training_set = outcome_training_set(name, registry, settings, days, label)
                timestamp = "ts"  # the outcome spine's own time column, whatever the flag says
            state = r.start(RetrainPlan(name, training_set, label, timestamp, seed, alpha))
        typer.echo(json.dumps(state, indent=2, sort_keys=True))


def _policy_reason(policy, name, settings, runs, registry, due) -> str | None:
    """Measure what the policy needs: last run time, drift alert now, labels since then."""
    import calendar
    import time

    from serving.monitoring.routes import run_monitor
    from serving.monitoring.sources import PredictionLog, registry_lookup

    last = None
    if runs:
        last = calendar.timegm(time.strptime(runs[-1]["started"], "%Y-%m-%dT%H:%M:%SZ"))
    drift = False
    if policy.on_drift:
        report = run_monitor(
            name, registry_lookup(registry), PredictionLog(settings.offline_location).read
        )
        drift = any(a["kind"] == "drift" for a in report["alerts"])
    labels = 0
    if policy.after_labels is not None:
        from serving.experiments.records import OUTCOME_SCHEMA
        from serving.experiments.report import dataset_dirs
        from serving.experiments.sink import read_dataset

        out = read_dataset(dataset_dirs(settings.offline_location)[1], OUTCOME_SCHEMA)
        since = int((last or 0) * 1_000_000)
        labels = out.filter(
            (pl.col("ts") > since) & (pl.col("model").is_null() | (pl.col("model") == name))
        ).height
    return due(policy, time.time(), last, drift, labels)
