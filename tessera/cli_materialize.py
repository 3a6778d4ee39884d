"""``tessera materialize``: batch views' latest rows into the online store (once or on a timer)."""

from __future__ import annotations

import signal
import threading
import time

import typer

from features.definitions import BatchFeatureView
from features.errors import DefinitionError
from features.settings import Settings
from tessera.cli_streams import DEFAULT_REPO, REPO_HELP, load_repo


def register(app: typer.Typer) -> None:
    @app.command("materialize")
    def materialize_cmd(
        view: list[str] = typer.Option(
            None, "--view", help="batch view to materialize (repeatable; default: every one)"),
        start: str | None = typer.Option(
            None, help="only rows from this time (ISO-8601 or epoch ms); default: the ttl"),
        end: str | None = typer.Option(
            None, help="rows up to this time (ISO-8601 or epoch ms); default: now"),
        incremental: bool = typer.Option(
            False, "--incremental", help="start where the last completed run of the view ended"),
        every: str | None = typer.Option(
            None, "--every", help="keep running: a run every DURATION (e.g. 1h); full runs "
            "unless --incremental"),
        repo: str = typer.Option(DEFAULT_REPO, "--repo", envvar="TESSERA_REPO", help=REPO_HELP),
    ) -> None:
        """Write, per entity, the latest row within the view's ttl into its Redis hash.

        Reruns are harmless (absolute writes); a crashed run is simply run again. Reads apply
        the ttl at read time, as training sets do."""
        from features.online.connection import connect_settings
        from features.online.read import parse_at
        from features.semantics.windows import parse_duration

        settings = Settings.from_env()
        fr = load_repo(repo)
        batch = [v for v in fr.views.values() if isinstance(v, BatchFeatureView)]
        if view:
            for name in view:
                if not isinstance(fr.view(name), BatchFeatureView):
                    raise DefinitionError(f"{name!r} is a windowed view; the stream worker "
                                          "writes it online. materialize takes batch views")
            batch = [v for v in batch if v.name in view]
        if not batch:
            raise DefinitionError(f"{repo} defines no BatchFeatureView to materialize")
        try:
            start_us = None if start is None else parse_at(start, "--start")
            end_us = None if end is None else parse_at(end, "--end")
            period_s = None if every is None else parse_duration(every) / 1e6
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        if every and (start or end):
            raise typer.BadParameter("--every runs up to now each time; drop --start/--end")
        client = connect_settings(settings)  # redis+cluster:// too
        if period_s is None:
            _run(client, batch, settings, start_us, end_us, incremental)
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.is_set():
            began = time.monotonic()
            # a full run also puts back keys that expired meanwhile (the stream worker keeps
            # an entity's key only as long as its windows) and rows written with older times
            _run(client, batch, settings, None, None, incremental)
            stop.wait(max(0.0, period_s - (time.monotonic() - began)))


def _run(client, views, settings: Settings, start_us, end_us, incremental: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from features.event_schema import us_to_iso
    from features.online.materialize import materialize_view

    for v in views:
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task(f"materializing {v.name}@{v.version[:12]}", total=None)

            def advance(done: int, total: int, task=task) -> None:
                bar.update(task, completed=done, total=total)

            r = materialize_view(client, v, settings.home, start_us=start_us, end_us=end_us,
                                 incremental=incremental, progress=advance)
        since = "the ttl" if r.start_us is None else us_to_iso(r.start_us)
        typer.echo(f"{v.name}@{v.version}: {r.entities} entities written (rows from {since} "
                   f"to {us_to_iso(r.end_us)}) in {r.wall_s:.2f} s")
        from serving.auth import actor, audit

        audit.record(settings.models_location, "materialize", who=actor.local(),
                     what=f"materialized {v.name}@{v.version}: {r.entities} entities up to "
                     f"{us_to_iso(r.end_us)}", view=v.name, entities=r.entities)
