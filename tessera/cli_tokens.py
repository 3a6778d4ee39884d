"""``tessera tokens create | list | revoke``: API tokens for the scorer's routes."""

from __future__ import annotations

import json
import time

import typer


def register(app: typer.Typer) -> None:
    tokens = typer.Typer(help="API tokens (stored hashed in <home>/tokens.json) with scopes.",
                         no_args_is_help=True)
    app.add_typer(tokens, name="tokens")

    def _store():
        from features.settings import Settings
        from serving.auth.tokens import TokenStore

        return TokenStore.at_home(Settings.from_env().home)

    @tokens.command("create")
    def create_cmd(
        name: str = typer.Option(..., "--name", help="who uses it (kept in audit records)"),
        scope: list[str] = typer.Option(
            ..., "--scope", help="features:read, predict, push, outcomes, ui or admin; "
                                 "repeatable"),
        if_missing: bool = typer.Option(
            False, "--if-missing", help="do nothing when an active token of this name exists "
                                        "(a deployment's first-start step, run on every start)"),
    ) -> None:
        """Create a token and print it once (only its hash is kept)."""
        store = _store()
        if if_missing and any(r.name == name and r.revoked is None for r in store.records()):
            typer.echo(f"an active token named {name!r} exists: none created", err=True)
            return
        token = store.create(name, scope)
        _audit("token.create", f"created token {token.split('_')[1]} ({name}) with "
                               f"scopes {', '.join(sorted(set(scope)))}")
        typer.echo(token)
        typer.echo(f"scopes: {', '.join(sorted(set(scope)))} -- store it now, it is not "
                   "shown again", err=True)

    @tokens.command("list")
    def list_cmd(
        as_json: bool = typer.Option(False, "--json", help="one JSON object per token"),
    ) -> None:
        """Every token: id, name, scopes, created, revoked (never the secret)."""
        records = _store().records()
        if not records:
            typer.echo("no tokens: the scorer accepts requests without one, on loopback only "
                       "(`tessera tokens create --name NAME --scope predict`)")
            return
        for r in records:
            if as_json:
                typer.echo(json.dumps({"id": r.id, "name": r.name, "scopes": list(r.scopes),
                                       "created": r.created, "revoked": r.revoked}))
                continue
            state = "revoked " + _when(r.revoked) if r.revoked else "active"
            typer.echo(f"{r.id}  {r.name}  {','.join(r.scopes)}  created {_when(r.created)}  "
                       f"{state}")

    @tokens.command("revoke")
    def revoke_cmd(token_id: str = typer.Argument(..., help="the id `tokens list` shows")) -> None:
        """Revoke a token: servers refuse it within a second, no restart needed."""
        rec = _store().revoke(token_id)
        _audit("token.revoke", f"revoked token {rec.id} ({rec.name})")
        typer.echo(f"revoked {rec.id} ({rec.name})")


def _audit(action: str, what: str) -> None:
    from features.settings import Settings
    from serving.auth import actor, audit

    audit.record(Settings.from_env().models_location, action, who=actor.local(), what=what)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
