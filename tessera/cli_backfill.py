"""``tessera backfill``: a view version's tile rings from the offline event log."""

from __future__ import annotations

import typer

from features.definitions import FeatureView
from features.errors import DefinitionError
from features.settings import Settings
from tessera.cli_streams import DEFAULT_REPO, REPO_HELP, load_repo


def register(app: typer.Typer) -> None:
    @app.command("backfill")
    def backfill_cmd(
        view: str = typer.Option(..., "--view", help="the windowed view to backfill"),
        repo: str | None = typer.Option(DEFAULT_REPO, "--repo", help=REPO_HELP),
        group: str = typer.Option(
            "tessera-worker", "--group", envvar="TESSERA_GROUP",
            help="the worker group whose Redis watermarks bound the events folded"),
        lateness: str = typer.Option("1h", "--allowed-lateness",
                                     help="the worker's --allowed-lateness (the horizon)"),
    ) -> None:
        """Write a view's current version to Redis from the event log (only its fields).

        Folds the log's events a ring can still hold (longest window + hop + allowed lateness)
        up to the group's Redis watermarks (the whole log if Redis has none), with the worker's
        kernel. A running worker is not told: see docs/streams.md, "Rebuild and backfill"."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        from features.offline.event_log import EventLog
        from features.online.connection import connect_settings
        from features.semantics.windows import parse_duration
        from streams.worker.rebuild import backfill

        settings = Settings.from_env()
        fr = load_repo(repo)
        v = fr.view(view)
        if not isinstance(v, FeatureView):
            raise DefinitionError(f"{view!r} is a batch view; only windowed views live online")
        source_views = [x for x in fr.views.values()
                        if isinstance(x, FeatureView) and x.source.name == v.source.name]
        client = connect_settings(settings)
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task(f"backfilling {v.name}@{v.version[:12]}", total=None)
            report = backfill(client, v, source_views, EventLog(settings.offline_location),
                              group=group, allowed_lateness_us=parse_duration(lateness),
                              progress=lambda done, total: bar.update(task, completed=done,
                                                                      total=total))
        for w in report.warnings:
            typer.echo(f"warning: {w}", err=True)
        r = report.rebuild
        bound = ("the whole log" if report.upto is None
                 else f"offsets up to the watermarks of group {group!r}")
        typer.echo(f"{v.name}@{v.version}: {r.entities} entities, {r.events} events "
                   f"({bound}), {r.keys_written} keys written in {r.total_s:.1f} s")
        from serving.auth import actor, audit

        audit.record(settings.models_location, "backfill", who=actor.local(),
                     what=f"backfilled {v.name}@{v.version}: {r.entities} entities, "
                     f"{r.events} events ({bound})", view=v.name, entities=r.entities)
