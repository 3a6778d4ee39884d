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
