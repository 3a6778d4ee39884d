"""``tessera audit``: is every consumed offset in the event log or the dead-letter topic?
``tessera audit log``: who changed what, when and why (``serving.auth.audit``)."""

from __future__ import annotations

import json

import typer

from features.settings import Settings


def register(app: typer.Typer) -> None:
    from tessera.cli_streams import DEFAULT_REPO, REPO_HELP

    audit_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)
    app.add_typer(audit_app, name="audit")

    @audit_app.command("log")
    def log_cmd(
        model: str | None = typer.Option(None, "--model", help="only this model's records"),
        who: str | None = typer.Option(None, "--who", help="only this actor's records, e.g. "
                                       "token:deployer or os:alice"),
        limit: int = typer.Option(100, "--limit", help="the newest N records (0: all)"),
        as_json: bool = typer.Option(False, "--json", help="one JSON object per record"),
    ) -> None:
        """Who changed what, when and why (oldest first).

        Deploys, promotions, rollbacks, alias moves, retrains, token changes, materialize,
        backfill and forget; who is token:NAME over HTTP, os:USER from the command line."""
        from serving.auth import audit

        rows = audit.entries(Settings.from_env().models_location, model=model, who=who,
                             limit=limit or None)
        if not rows:
            typer.echo("no audit records yet", err=True)
        for r in rows:
            if as_json:
                typer.echo(json.dumps(r, sort_keys=True, default=str))
                continue
            where = f"{r['model']}: " if r.get("model") else ""
            typer.echo(f"{r.get('when', '')}  {r.get('who', '?')}  {where}{audit.describe(r)}"
                       f"  ({r.get('why') or '-'})")

    @audit_app.callback()
    def audit_cmd(
        ctx: typer.Context,
        source: str | None = typer.Option(None, "--source", help="the event source to audit"),
        group: str = typer.Option("tessera-worker", "--group", envvar="TESSERA_GROUP",
                                  help="the worker's consumer group (its Redis watermarks)"),
        repo: str | None = typer.Option(DEFAULT_REPO, "--repo", help=REPO_HELP),
        idle: float = typer.Option(1.5, "--idle", help="seconds without a dead letter before "
                                   "the dead-letter topic counts as read"),
    ) -> None:
        """Every offset from the Kafka log start to the worker's watermark must be in the event
        log (current epoch) or dead-lettered; exits 1 and lists the gaps otherwise.
        `tessera audit log` prints the audit log of state changes instead."""
        if ctx.invoked_subcommand is not None:
            return
        if source is None:
            raise typer.BadParameter("give --source SOURCE (the offsets audit), or run "
                                     "`tessera audit log`", param_hint="--source")
        from features.kafka_config import KafkaSecurity
        from features.offline.event_log import EventLog
        from streams.audit import audit
        from tessera.cli_streams import _source, load_repo

        settings = Settings.from_env()
        src = _source(load_repo(repo), source)
        client = None
        if settings.redis_url:
            from features.online.connection import connect_settings

            client = connect_settings(settings)
        try:
            report = audit(src, bootstrap=settings.require_kafka(),
                           event_log=EventLog(settings.offline_location), redis_client=client,
                           group=group, idle_s=idle,
                           security=KafkaSecurity.from_settings(settings))
        finally:
            if client is not None:
                client.close()
        typer.echo(f"audit of {src.name} ({report.topic}, group {group})")
        typer.echo(_table(["partition", "epoch", "log start", "watermark", "expected",
                           "in log", "dead letters", "in both", "missing"],
                          [[p.partition, p.epoch, p.log_start,
                            "-" if p.watermark is None else p.watermark, p.expected, p.in_log,
                            p.in_dlq, p.in_both, sum(g.count for g in p.gaps)]
                           for p in report.partitions]))
        if report.ok:
            typer.echo("no gaps: every offset up to the watermark is in the event log or "
                       "dead-lettered")
            return
        typer.echo("\ngaps (offsets in neither the event log nor the dead-letter topic):")
        typer.echo(_table(["partition", "first", "last", "count"],
                          [[g.partition, g.first, g.last, g.count] for g in report.gaps]))
        typer.echo(f"error: {report.missing} offsets in {len(report.gaps)} gaps are lost; "
                   "replay them from Kafka (reset the group's offsets) if still retained",
                   err=True)
        raise typer.Exit(1)


def _table(header: list[str], rows: list[list[object]]) -> str:
    cells = [header, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True))
                     for r in cells)
