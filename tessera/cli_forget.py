"""``tessera forget``: erase one entity online and offline, with an audit record."""

from __future__ import annotations

import json

import typer

from features.settings import Settings


def register(app: typer.Typer) -> None:
    from tessera.cli_streams import DEFAULT_REPO, REPO_HELP

    @app.command("forget")
    def forget_cmd(
        entity: str = typer.Option(..., "--entity", help="the entity's key value, e.g. u1 (a "
                                   "composite key as a JSON list: '[\"u1\", \"m7\"]')"),
        entity_name: str | None = typer.Option(
            None, "--entity-name", help="which entity (e.g. user), when several have as many "
                                        "key columns"),
        source: list[str] = typer.Option([], "--source", help="only this source's event log "
                                         "(repeatable; default: every source of the entity)"),
        view: list[str] = typer.Option([], "--view", help="only the sources of this view "
                                       "(repeatable)"),
        why: str = typer.Option("", "--why", "-m", help="why (audited), e.g. the request's id"),
        repo: str | None = typer.Option(DEFAULT_REPO, "--repo", help=REPO_HELP),
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    ) -> None:
        """Erase ENTITY: its online hash (every view of it), its events in the event log (files
        rewritten, one atomic commit) and its rows in the prediction and outcome logs. The
        audit log records who (the OS user: `os:NAME`), the entity and the counts. Kafka topics
        and batch views' own Parquet files are not erased: the output lists them."""
        from serving.auth import actor
        from serving.forget import forget_entity
        from tessera.cli_streams import load_repo

        settings = Settings.from_env()
        client = None
        if settings.redis_url:
            from features.online.connection import connect_settings

            client = connect_settings(settings)
        try:
            out = forget_entity(settings, load_repo(repo, settings), entity, who=actor.local(),
                                why=why, entity=entity_name, sources=source, views=view,
                                redis_client=client)
        finally:
            if client is not None:
                client.close()
        if as_json:
            typer.echo(json.dumps(out, indent=2, sort_keys=True))
            raise typer.Exit(0 if out["complete"] else 1)
        typer.echo(f"forgot {out['entity']} {entity}: {out['online_keys']} online key(s), "
                   f"{out['offline_rows']} event row(s), "
                   f"{sum(out['logged_rows'].values())} prediction/outcome row(s)")
        for name, s in out["sources"].items():
            typer.echo(f"  {name}: {s['rows']} rows removed, {s['files']} files rewritten, "
                       f"snapshot generation {s['generation']}")
        for what in out["not_erased"]:
            typer.echo(f"not erased: {what}", err=True)
        if not out["complete"]:
            raise typer.Exit(1)
