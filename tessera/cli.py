"""The ``tessera`` command. Each area registers its own commands from its own module."""

from __future__ import annotations

import sys

import typer

from features.errors import TesseraError

app = typer.Typer(
    help="Tessera: streaming features, point-in-time training sets, LightGBM serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"tessera {version('tessera')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="print the installed version and exit"),
) -> None:
    """Tessera: streaming features, point-in-time training sets, LightGBM serving."""


def _register() -> None:
    import importlib

    for name in ("cli_features", "cli_streams", "cli_serving", "cli_experiments", "cli_monitor",
                 "cli_audit", "cli_backfill", "cli_materialize", "cli_init", "cli_tokens",
                 "cli_forget"):
        try:
            mod = importlib.import_module(f"tessera.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"tessera.{name}":
                continue
            raise
        mod.register(app)


def main() -> None:
    _register()
    try:
        app()
    except TesseraError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except Exception as e:
        if not _kafka_unreachable(e):
            raise
        typer.echo(f"error: cannot reach Kafka ({e}); check KAFKA_BOOTSTRAP and that the "
                   "broker is up", err=True)
        sys.exit(2)


def _kafka_unreachable(e: Exception) -> bool:
    """kafka-python's ways of saying no broker answered at all (a wrong address, a broker not
    started yet), which every command that talks to Kafka can meet before doing anything."""
    from kafka.errors import KafkaTimeoutError

    return isinstance(e, KafkaTimeoutError) and "unable to bootstrap" in str(e).lower()
