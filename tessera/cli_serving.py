"""``tessera train | models list|show|alias | serve``: the model registry and the scorer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from features.settings import Settings

CHAMPION_ALIAS = "champion"

MODELS_URI = typer.Option(
    None, "--models-uri",
    help="model storage: a folder or a pyarrow filesystem URI (default: models_uri in "
         "tessera.yaml / TESSERA_MODELS_URI, else <home>/models)",
)


def _registry(uri: str | None):
    from serving.registry import ModelRegistry

    return ModelRegistry(uri or Settings.from_env().models_location)


def _refuse_open_binding(host: str, settings: Settings) -> None:
    """Without a token nothing is authenticated, so only this machine may connect."""
    import ipaddress

    from serving.auth.tokens import TokenError, TokenStore

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not TokenStore.at_home(settings.home).active:
        raise TokenError(
            f"refusing to listen on {host} without authentication: create a token "
            "(`tessera tokens create --name NAME --scope predict`; any live token turns auth "
            "on for every route), or listen on 127.0.0.1")


def _view_versions(refs: list[str], repo_path: Path | None) -> dict[str, str]:
    """Versions of the views the features come from, when a feature repo is available."""
    from features.errors import TesseraError
    from features.repos import resolve_repo

    try:
        repo = resolve_repo(repo_path, Settings.from_env())
    except TesseraError:
        if repo_path:
            raise
        return {}
    views = {r.split(":", 1)[0] for r in refs if ":" in r}
    known = {**repo.views, **repo.requests}  # request feature views are versioned too
    return {v: known[v].version for v in sorted(views) if v in known}


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        training_set: Path = typer.Option(..., "--training-set", exists=True, dir_okay=False,
                                          help="Parquet written by `tessera training-set`"),
        label: str = typer.Option(..., help="label column (0/1)"),
        model: str = typer.Option(..., "--model", help="model name in the registry"),
        params: Path | None = typer.Option(None, exists=True, help="LightGBM params JSON file"),
        seed: int = typer.Option(0, help="seed of every random choice (same seed, same model)"),
        features: str | None = typer.Option(
            None, help="comma-separated feature refs (default: every view__feature column)"
        ),
        timestamp: str = typer.Option("ts", "--timestamp-column",
                                      help="time column used for the holdout split"),
        holdout: float = typer.Option(0.2, help="share of newest rows held out for metrics"),
        min_holdout_rows: int | None = typer.Option(
            None, envvar="TESSERA_MIN_HOLDOUT_ROWS",
            help="refuse a holdout smaller than this (default 100)",
        ),
        segment: list[str] = typer.Option(
            [], help="column kept with the holdout for per-segment metrics and gates (repeatable)"
        ),
        progress: bool = typer.Option(True, help="print holdout AUC/logloss while training"),
        repo: Path | None = typer.Option(
            None, help="feature repo file, to record view versions (default: applied registry)"
        ),
        alias: str | None = typer.Option(None, help="also point this alias at the new version"),
        override: bool = typer.Option(
            False, help="with --alias champion: promote even if the review gates fail (audited)"
        ),
        why: str = typer.Option("", "--why", help="reason for --alias (needed with --override)"),
        models_uri: str | None = MODELS_URI,
    ) -> None:
        """Train LightGBM on a training set and register it as a new immutable version."""
        from features.offline.training_set import read_fingerprint
        from serving.registry import gates
        from serving.registry.training import train

        p = json.loads(params.read_text()) if params else None
        refs = [f.strip() for f in features.split(",")] if features else None

        def report(i: int, n: int, m: dict) -> None:
            typer.echo(f"  iteration {i}/{n}: holdout AUC {m['auc']:.4f}, "
                       f"logloss {m['logloss']:.4f}", err=True)

        res = train(training_set, label, refs, timestamp, p, seed, holdout,
                    min_holdout_rows=min_holdout_rows, segments=segment,
                    progress=report if progress else None)
        reg = _registry(models_uri)
        champion = None
        if reg.versions(model) and CHAMPION_ALIAS in reg.aliases(model):
            champion = reg.get(model, CHAMPION_ALIAS)
        res.extra.update(
            label=label,
            seed=seed,
            training_set={"path": str(training_set.resolve()),
                          "fingerprint": read_fingerprint(training_set)},
            feature_views=_view_versions(res.features, repo),
            gates=gates.evaluate(reg.gate_policy(model), res.metrics, res.holdout, champion),
        )
        mv = reg.register(model, res.model_text, res.metadata(), holdout=res.holdout)
        m = res.metrics
        g = res.extra["gates"]
        typer.echo(
            f"registered {model} v{mv.version}: AUC {m['auc']:.4f}, logloss {m['logloss']:.4f}, "
            f"calibration error {m['calibration_error']:.4f} on {m['holdout_rows']} holdout rows "
            f"from {m['holdout_from']}; gates "
            + ("passed" if g["passed"] else f"FAILED ({', '.join(g['failed'])})")
        )
        if alias:
            reg.set_alias(model, alias, mv.version, why=why or f"trained on {training_set.name}",
                          override=override)
            typer.echo(f"{model} {alias} -> {mv.version}")

    models = typer.Typer(help="Registered models: versions, metadata, aliases and model cards.")
    app.add_typer(models, name="models")

    @models.command("list")
    def list_cmd(models_uri: str | None = MODELS_URI) -> None:
        """Every model with its versions and aliases."""
        reg = _registry(models_uri)
        names = reg.models()
        if not names:
            typer.echo(f"no models in {reg.storage.uri}; register one with `tessera train "
                       "--training-set PATH --label COL --model NAME`")
        for name in names:
            aliases = ", ".join(f"{a}={v}" for a, v in sorted(reg.aliases(name).items()))
            typer.echo(f"{name}: versions {', '.join(reg.versions(name))}"
                       + (f"; {aliases}" if aliases else ""))

    @models.command("show")
    def show_cmd(
        name: str = typer.Argument(..., help="NAME, NAME@ALIAS or NAME@VERSION"),
        ref: str | None = typer.Argument(None, help="version number, alias or 'latest'"),
        as_json: bool = typer.Option(False, "--json", help="the stored metadata as JSON"),
        full: bool = typer.Option(False, "--full", help="with --json: reference distributions"),
        audit: bool = typer.Option(False, "--audit", help="print the alias audit log instead"),
        models_uri: str | None = MODELS_URI,
    ) -> None:
        """The model card of one version (default: latest), its metadata, or the audit log."""
        from serving.registry.model_card import build_card, format_card, parse_ref

        name, ref = parse_ref(name, ref)
        reg = _registry(models_uri)
        if audit:
            for entry in reg.audit(name):
                typer.echo(json.dumps(entry, sort_keys=True))
            return
        if not as_json:
            typer.echo(format_card(build_card(reg, name, ref)))
            return
        meta = reg.metadata(name, ref)
        if not full:
            meta = {k: v for k, v in meta.items() if k != "reference"}
        meta["aliases"] = sorted(a for a, v in reg.aliases(name).items() if v == meta["version"])
        typer.echo(json.dumps(meta, indent=2, sort_keys=True))

    @models.command("policy")
    def policy_cmd(
        name: str | None = typer.Argument(None, help="model name (default: every model's)"),
        set_file: Path | None = typer.Option(
            None, "--set", exists=True, dir_okay=False,
            help="JSON file of gate limits: min_auc, max_calibration_error, max_auc_drop, "
            "segment, min_segment_auc, max_segment_gap, min_segment_rows",
        ),
        models_uri: str | None = MODELS_URI,
    ) -> None:
        """Show (or set) the review gate policy checked at register and at promotion."""
        from serving.registry.gates import GatePolicy

        reg = _registry(models_uri)
        if set_file is not None:
            reg.set_gate_policy(name, GatePolicy.from_dict(json.loads(set_file.read_text())))
        typer.echo(json.dumps(reg.gate_policy(name or "").to_dict(), indent=2))

    @models.command("alias")
    def alias_cmd(
        name: str,
        alias: str,
        version: str | None = typer.Argument(None, help="version or alias to point at"),
        why: str = typer.Option(..., "--why", "-m", help="reason, kept in the audit log"),
        remove: bool = typer.Option(False, "--remove", help="delete the alias"),
        override: bool = typer.Option(
            False, help="make VERSION the champion even though its review gates fail (audited)"
        ),
        models_uri: str | None = MODELS_URI,
    ) -> None:
        """Point ALIAS (e.g. champion) at VERSION; the change is appended to the audit log.
        Moving champion runs the review gates first (`tessera models policy`)."""
        if version is None and not remove:
            raise typer.BadParameter("give a VERSION, or --remove")
        entry = _registry(models_uri).set_alias(
            name, alias, None if remove else version, why=why, override=override
        )
        gates = entry.get("gates")
        note = "" if not isinstance(gates, dict) else (
            " (gates passed)" if gates["passed"]
            else f" (gates FAILED: {', '.join(gates['failed'])}; overridden)")
        typer.echo(f"{name} {alias}: {entry['before']} -> {entry['after']}{note}")

    @app.command("serve")
    def serve_cmd(
        model: list[str] = typer.Option(
            [], "--model",
            help="model to serve, NAME (follows champion) or NAME@ALIAS; repeatable "
            "(default: every model that has a champion alias)",
        ),
        host: str | None = typer.Option(
            None, help="address to listen on (default: serve.host, 127.0.0.1)"),
        port: int | None = typer.Option(None, help="port to listen on (default: serve.port, 8000)"),
        workers: int = typer.Option(1, help="server processes"),
        repo: Path | None = typer.Option(
            None, help="feature repo file (default: `repo` in tessera.yaml, else the applied "
                       "registry)",
        ),
        redis_timeout_ms: float | None = typer.Option(
            None, help="Redis timeout: slower answers 503 (default: serve.redis_timeout_ms, 100)"
        ),
        max_entities: int | None = typer.Option(
            None, help="largest batch one request may ask for (default: serve.max_entities)"),
        reload_s: float | None = typer.Option(
            None, help="how often aliases are re-read, s (default: serve.reload_s, 1)"),
        allow_no_model: bool = typer.Option(
            False, "--allow-no-model", envvar="TESSERA_ALLOW_NO_MODEL",
            help="with no champion yet, serve /v1/features only (/readyz says 'no model "
            "loaded'); restart once one is trained",
        ),
        models_uri: str | None = MODELS_URI,
        log_level: str = typer.Option("warning", "--log-level",
                                      help="debug, info, warning, error or critical"),
        log_format: str = typer.Option(
            "auto", "--log-format",
            help="json, text, or auto: JSON lines unless stderr is a terminal"),
        access_log: bool = typer.Option(
            False, "--access-log", help="log every request (method, path, status)"),
    ) -> None:
        """Serve POST /v1/predict/{model} and /v1/features over HTTP (uvicorn)."""
        import tempfile

        from features.errors import RegistryError
        from serving.http.main import ServeConfig, build_scorer
        from serving.http.workers import serve
        from serving.registry import CHAMPION
        from tessera.logs import setup_logging

        log_config = setup_logging(log_level, log_format)
        s = Settings.from_env()
        host = s.serve.host if host is None else host
        port = s.serve.port if port is None else port
        _refuse_open_binding(host, s)
        if repo is not None:
            s = s.model_copy(update={"repo": repo.resolve()})
        cfg = ServeConfig.from_settings(
            s, models=list(model) or None, models_uri=models_uri,
            redis_timeout_ms=redis_timeout_ms, max_entities=max_entities, reload_s=reload_s)
        if not cfg.models:
            reg = _registry(cfg.models_uri)
            cfg.models = [n for n in reg.models() if CHAMPION in reg.aliases(n)]
            if not cfg.models and allow_no_model:
                typer.echo(f"no model with a champion alias in {cfg.models_uri}: serving "
                           "features only", err=True)
            elif not cfg.models:
                raise RegistryError(
                    f"no model with a champion alias in {cfg.models_uri}; train one (`tessera "
                    "train --alias champion ...`) or pass --model NAME@ALIAS"
                )
        cfg.log_level, cfg.log_config, cfg.access_log = log_level, log_config, access_log
        build_scorer(cfg).models.close()  # fail here, with a clear error, not in each worker
        if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # prometheus-client's own switch; spawned workers inherit it
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tessera-prom-")
        serve(cfg, host, port, workers)

