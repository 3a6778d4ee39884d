"""Parse a container's arguments with the real ``tessera`` CLI, without running anything."""

from __future__ import annotations

from collections.abc import Sequence

import typer


def tessera_command():
    from tessera import cli

    cli._register()
    return typer.main.get_command(cli.app)


def parse(args: Sequence[str]) -> list[str]:
    """The command path ``args`` selects (e.g. ``["models", "list"]``). Raises the CLI's own
    usage error (unknown command or option, bad value, missing required option) as the shell
    would, or ValueError when the arguments stop at a group."""
    cmd, name, rest, ctx, path = tessera_command(), "tessera", list(args), None, []
    while True:
        ctx = cmd.make_context(name, rest, parent=ctx)  # parses and validates, never invokes
        if not hasattr(cmd, "resolve_command"):
            return path
        protected = getattr(ctx, "protected_args", None) or getattr(ctx, "_protected_args", [])
        rest = [*protected, *ctx.args]
        if not rest:
            raise ValueError(f"`tessera {' '.join(args)}` names no command")
        name, cmd, rest = cmd.resolve_command(ctx, rest)
        path.append(name)
