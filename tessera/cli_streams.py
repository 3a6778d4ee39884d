"""Stream commands: ``up``/``down``, ``produce``, ``generate``, ``worker``, ``skew-check``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from features.definitions import (
    EventSource,
    FeatureRepo,
)
from features.errors import DefinitionError, SchemaError
from features.settings import Settings

REPO_HELP = ("feature repo module (a Python file defining sources and views); default: `repo` "
             "in tessera.yaml, else the registry `tessera apply` recorded")
DEFAULT_REPO = None


def load_repo(path: str | Path | None, settings: Settings | None = None) -> FeatureRepo:
    """The feature repo a command uses (``features.repos.resolve_repo``: one rule for all)."""
    from features.repos import resolve_repo

    return resolve_repo(path, settings or Settings.from_env())


def _source(repo: FeatureRepo, name: str) -> EventSource:
    try:
        return repo.sources[name]
    except KeyError:
        raise DefinitionError(
            f"no source {name!r} in the repo; sources: {', '.join(sorted(repo.sources))}"
        ) from None


def _read_events(path: Path):
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        import orjson

        def lines():
            with open(path, "rb") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            yield orjson.loads(line)
                        except orjson.JSONDecodeError as e:
                            yield SchemaError(f"line {n} is not valid JSON: {e}")

        return lines()
    import polars as pl

    if suffix == ".parquet":
        return pl.read_parquet(path).iter_rows(named=True)
    if suffix == ".csv":
        return pl.read_csv(path).iter_rows(named=True)
    raise DefinitionError(f"unsupported file {path}; use .jsonl, .parquet or .csv")


def register(app: typer.Typer) -> None:
    repo_opt = typer.Option(DEFAULT_REPO, "--repo", help=REPO_HELP)

    @app.command("up")
    def up_cmd() -> None:
        """Start a local Kafka-protocol broker and Redis (unless KAFKA_BOOTSTRAP / REDIS_URL
        are set), with logs and data under $TESSERA_HOME."""
        from tessera.local import up

        state = up(Settings.from_env().home)
        typer.echo(json.dumps({k: state[k] for k in ("bootstrap", "redis_url", "home")}))

    @app.command("down")
    def down_cmd() -> None:
        """Stop what `tessera up` started."""
        from tessera.local import down

        stopped = down(Settings.from_env().home)
        typer.echo(f"stopped {len(stopped)} process(es)")

    @app.command("produce")
    def produce_cmd(
        source: str = typer.Option(..., "--source", help="source name"),
        file: Path = typer.Option(..., "--file", help="events.jsonl | .parquet | .csv"),
        repo: str | None = repo_opt,
    ) -> None:
        """Validate and publish the events of a file; print sent / rejected counts."""
        from rich.progress import Progress

        from features.kafka_config import KafkaSecurity
        from streams.producer import publish
        from streams.topics import ensure_topics

        settings = Settings.from_env()
        src = _source(load_repo(repo), source)
        bootstrap = settings.require_kafka()
        security = KafkaSecurity.from_settings(settings)
        ensure_topics([src], bootstrap, security=security)
        with Progress(transient=True) as bar:
            task = bar.add_task(f"publishing to {src.topic}", total=None)
            report = publish(src, _read_events(file), bootstrap,
                             progress=lambda n: bar.advance(task, n), security=security)
        for r in report.rejected[:20]:
            typer.echo(f"rejected event #{r.index}: {r.reason}", err=True)
        if len(report.rejected) > 20:
            typer.echo(f"... and {len(report.rejected) - 20} more rejected", err=True)
        typer.echo(f"sent {report.sent}, rejected {len(report.rejected)}, "
                   f"failed {len(report.failed)}")
        if report.failed:
            raise typer.Exit(1)

    @app.command("generate")
    def generate_cmd(
        source: str = typer.Option("transactions", "--source",
                                   help="source to generate events for"),
        rate: float = typer.Option(1000.0, "--rate", help="events per second (0 = flat out)"),
        count: int | None = typer.Option(None, "--count", help="stop after N (default: never)"),
        users: int = typer.Option(10_000, "--users", help="distinct entities"),
        seed: int = typer.Option(7, "--seed", help="random seed (same seed, same events)"),
        timeout: float = typer.Option(30.0, "--timeout", help="seconds to wait for each ack"),
        repo: str | None = repo_opt,
    ) -> None:
        """Publish synthetic card transactions (some late, some malformed) at a steady rate.

        Exits 1 if the broker did not acknowledge every send."""
        from features.kafka_config import KafkaSecurity
        from streams.generate import run
        from streams.topics import ensure_topics

        settings = Settings.from_env()
        src = _source(load_repo(repo), source)
        bootstrap = settings.require_kafka()
        security = KafkaSecurity.from_settings(settings)
        ensure_topics([src], bootstrap, security=security)
        rep = run(src, bootstrap, count=count, rate=rate, users=users, seed=seed,
                  timeout_s=timeout, security=security)
        typer.echo(f"sent {rep.sent} valid and {rep.malformed} malformed events to {src.topic}")
        if rep.failed:
            typer.echo(f"error: {rep.failed} events were not acknowledged by the broker "
                       f"(first error: {rep.first_error}); stopped", err=True)
            raise typer.Exit(1)

    @app.command("worker")
    def worker_cmd(
        repo: str | None = repo_opt,
        source: list[str] = typer.Option([], "--source", help="only these sources"),
        group: str = typer.Option(
            "tessera-worker", "--group", envvar="TESSERA_GROUP",
            help="Kafka consumer group; workers in one group share the partitions"),
        lateness: str = typer.Option(
            "1h", "--allowed-lateness",
            help="slack beyond the longest window + hop before an event is late: then it is "
                 "kept offline but not applied online"),
        max_records: int = typer.Option(10_000, "--max-records",
                                        help="records per poll (one batch)"),
        commit_interval_s: float = typer.Option(
            1.0, "--commit-interval",
            help="while catching up, write Redis at least this often (s); a poll that drains "
                 "the topics is always written at once"),
        session_timeout_ms: int = typer.Option(
            10_000, "--session-timeout-ms",
            help="a worker silent this long loses its partitions to the others"),
        max_idle_s: float | None = typer.Option(None, "--max-idle-s",
                                                help="exit after this long without events"),
        log_level: str = typer.Option("warning", "--log-level",
                                      help="debug, info, warning, error or critical"),
        log_format: str = typer.Option(
            "auto", "--log-format",
            help="json, text, or auto: JSON lines unless stderr is a terminal"),
        metrics_port: int = typer.Option(0, "--metrics-port",
                                         help="serve Prometheus /metrics here (0 = off)"),
        metrics_host: str = typer.Option("127.0.0.1", "--metrics-host",
                                        help="address for /metrics"),
    ) -> None:
        """Consume source topics into Redis tile rings and the Parquet event log."""
        from features.kafka_config import KafkaSecurity
        from features.online.connection import RedisTransport
        from streams.topics import ensure_topics
        from streams.worker.app import Worker, WorkerConfig
        from streams.worker.host import run_in_faust
        from tessera.logs import setup_logging

        log_config = setup_logging(log_level, log_format)
        settings = Settings.from_env()
        fr = load_repo(repo)
        cfg = WorkerConfig(
            bootstrap=settings.require_kafka(), redis_url=settings.require_redis(),
            offline_dir=settings.offline_location, group=group, sources=tuple(source),
            allowed_lateness=lateness, max_records=max_records,
            session_timeout_ms=session_timeout_ms, commit_interval_s=commit_interval_s,
            redis_transport=RedisTransport.from_settings(settings),
            kafka_security=KafkaSecurity.from_settings(settings),
        )
        ensure_topics([fr.sources[s] for s in (source or fr.sources)], cfg.bootstrap,
                      security=cfg.kafka_security)
        worker = Worker(fr, cfg)
        if metrics_port:
            from streams.worker.metrics import WorkerMetrics

            metrics = WorkerMetrics()
            metrics.serve(metrics_port, metrics_host)
            worker.on_tick = metrics.update
        run_in_faust(worker, settings.home / "faust", max_idle_s=max_idle_s, log_level=log_level,
                     logging_config=log_config)
        typer.echo(json.dumps(worker.stats()))

    @app.command("skew-check")
    def skew_cmd(
        view: str = typer.Option(..., "--view", help="feature view to compare"),
        sample: int = typer.Option(100, "--sample", help="random entities to compare"),
        at: str | None = typer.Option(None, "--at", help="ISO time or epoch ms (default now)"),
        seed: int = typer.Option(0, "--seed", help="seed for the entity sample"),
        repo: str | None = repo_opt,
    ) -> None:
        """Compare online values of N random entities with their offline recomputation.

        Exits 1 when any feature differs (counts/min/max/last exactly, others to 1e-9)."""
        from features.event_schema import parse_timestamp
        from features.offline.event_log import EventLog
        from features.online.connection import connect_settings
        from features.skew import skew_check

        settings = Settings.from_env()
        t = time.time_ns() // 1000 if at is None else parse_timestamp(
            int(at) if at.isdigit() else at, "--at")
        client = connect_settings(settings)
        report = skew_check(load_repo(repo), view, client, EventLog(settings.offline_location),
                            at=t, sample=sample, seed=seed)
        for m in report.mismatches[:20]:
            typer.echo(f"MISMATCH {m.entity} {m.feature}: online={m.online} "
                       f"offline={m.offline}")
        typer.echo(f"{report.view}: {report.entities} entities x {report.features} features, "
                   f"{len(report.mismatches)} mismatches")
        if report.mismatches:
            raise typer.Exit(1)
