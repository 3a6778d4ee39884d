"""``tessera apply | training-set | import-events | compact``: definitions and the offline store."""

from __future__ import annotations

from pathlib import Path

import typer

from features.errors import OfflineStoreError, RegistryError
from features.settings import Settings


def _source(settings: Settings, name: str):
    from features.registry import load_repo

    repo = load_repo(settings)
    if name not in repo.sources:
        raise RegistryError(f"no event source {name!r} in the registry; known: "
                            f"{', '.join(sorted(repo.sources)) or 'none'} (run `tessera apply`)")
    return repo.sources[name]


def register(app: typer.Typer) -> None:
    @app.command("apply")
    def apply_cmd(
        repo: Path = typer.Option(..., "--repo", help="Python module defining the features"),
        topics: bool = typer.Option(True, help="create the sources' topics if a broker is set"),
    ) -> None:
        """Validate a feature repo and record each view under its content hash."""
        from features.registry import apply, load_module

        settings = Settings.from_env()
        report = apply(load_module(repo), settings)
        for line in report.lines():
            typer.echo(line)
        if topics and settings.kafka_bootstrap:
            from streams.topics import ensure_topics

            created = ensure_topics(report.sources, settings.kafka_bootstrap)
            typer.echo(f"topics created: {', '.join(created) or 'none (all exist)'}")
        typer.echo(f"registry: {settings.registry_dir}")

    @app.command("training-set")
    def training_set_cmd(
        spine: Path = typer.Option(..., help="Parquet or CSV: entity keys, timestamp, labels"),
        features: str = typer.Option(..., help="comma-separated view:feature references"),
        out: Path = typer.Option(..., help="output Parquet file"),
        timestamp_column: str = typer.Option("ts", help="the spine's timestamp column"),
    ) -> None:
        """Point-in-time correct features for every spine row, written to --out."""
        from features.offline.training_set import build_training_set, write_training_set

        refs = [r.strip() for r in features.split(",") if r.strip()]
        if not refs:
            raise OfflineStoreError("--features is empty; give e.g. user_spend:amount_sum_1h")
        ts = build_training_set(spine, refs, settings=Settings.from_env(),
                                timestamp_column=timestamp_column)
        write_training_set(ts.frame, out, ts.fingerprint)
        typer.echo(f"rows: {ts.frame.height}")
        typer.echo(f"features: {len(refs)}")
        typer.echo(f"fingerprint: {ts.fingerprint}")
        typer.echo(f"written: {out}")

    @app.command("import-events")
    def import_events_cmd(
        source: str = typer.Option(..., help="event source name"),
        file: Path = typer.Option(..., help="Parquet, CSV or JSONL file of events"),
    ) -> None:
        """Import your own event file into the offline log (idempotent)."""
        from features.offline.event_log import EventLog

        settings = Settings.from_env()
        n = EventLog(settings.offline_dir).import_file(_source(settings, source), file)
        typer.echo(f"imported {n} events into {source}" + ("" if n else " (already imported)"))

    @app.command("compact")
    def compact_cmd(source: str = typer.Option(..., help="event source name")) -> None:
        """Merge each date partition's small files into one (results do not change)."""
        from features.offline.event_log import EventLog

        settings = Settings.from_env()
        n = EventLog(settings.offline_dir).compact(_source(settings, source))
        typer.echo(f"compacted {source}: {n} files merged")
