"""``tessera monitor report NAME``: drift and data quality of a model's latest predictions."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import polars as pl
import typer

from features.settings import Settings


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
            None, help="reference JSON (default: the model's, under $TESSERA_HOME/models)"
        ),
        webhook: str | None = typer.Option(
            None, envvar="TESSERA_ALERT_WEBHOOK", help="POST alerts here"
        ),
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    ) -> None:
        """Compare the newest predictions of NAME with its training-time reference.

        Exits 1 when any alert is on, so a cron job or CI step can act on it.
        """
        from serving.monitoring.alerts import Alerter
        from serving.monitoring.report import format_report
        from serving.monitoring.routes import run_monitor
        from serving.monitoring.sources import PredictionLog, ReferenceFiles, load_reference

        settings = Settings.from_env()
        lookup = ReferenceFiles(settings.models_dir)
        if reference is not None:
            lookup = partial(load_reference, reference)
        if predictions is None:
            read = PredictionLog(settings.offline_dir).read
        else:
            src = str(predictions / "*.parquet") if predictions.is_dir() else str(predictions)
            read = lambda: pl.read_parquet(src)  # noqa: E731
        r = run_monitor(
            name, lookup, read, rows=rows, seconds=seconds, alerter=Alerter(webhook_url=webhook)
        )
        typer.echo(json.dumps(r, indent=2) if as_json else format_report(r))
        if r["alerts"]:
            raise typer.Exit(1)

    @monitor.command("ui")
    def ui(
        host: str = typer.Option("127.0.0.1", help="bind address"),
        port: int = typer.Option(8090, help="port"),
        metrics: list[str] = typer.Option(
            [], help="a /metrics URL (worker, scorer) to read freshness and throughput from"
        ),
        webhook: str | None = typer.Option(
            None, envvar="TESSERA_ALERT_WEBHOOK", help="POST alerts here"
        ),
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
        from serving.monitoring.sources import PredictionLog, ReferenceFiles

        settings = Settings.from_env()
        app = FastAPI(title="Tessera monitor")
        app.include_router(dashboard_router(from_settings(settings, metrics)))
        app.include_router(
            monitor_router(
                ReferenceFiles(settings.models_dir),
                PredictionLog(settings.offline_dir).read,
                alerter=Alerter(webhook_url=webhook),
            )
        )
        typer.echo(f"dashboard on http://{host}:{port}/ui")
        uvicorn.run(app, host=host, port=port, log_level="warning")
