"""``tessera audit``: is every consumed offset in the event log or the dead-letter topic?"""

from __future__ import annotations

import typer

from features.settings import Settings


def register(app: typer.Typer) -> None:
    from tessera.cli_streams import DEFAULT_REPO, REPO_HELP

    @app.command("audit")
    def audit_cmd(
        source: str = typer.Option(..., "--source", help="the event source to audit"),
        group: str = typer.Option("tessera-worker", "--group", envvar="TESSERA_GROUP",
                                  help="the worker's consumer group (its Redis watermarks)"),
        repo: str | None = typer.Option(DEFAULT_REPO, "--repo", help=REPO_HELP),
        idle: float = typer.Option(1.5, "--idle", help="seconds without a dead letter before "
                                   "the dead-letter topic counts as read"),
    ) -> None:
        """Every offset from the Kafka log start to the worker's watermark must be in the event
        log (current epoch) or dead-lettered; exits 1 and lists the gaps otherwise."""
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
