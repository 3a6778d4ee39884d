"""``tessera deploy | promote | rollback | experiment ...``: shadows and A/B experiments."""

from __future__ import annotations

import json
from dataclasses import replace

import typer

from features.settings import Settings


def _store():
    from serving.experiments.spec import DeploymentStore

    return DeploymentStore(Settings.from_env().models_location)


def _registry():
    from serving.registry import ModelRegistry

    return ModelRegistry(Settings.from_env().models_location)


def _alias_setter(why: str, override: bool = False, gate: bool = True):
    """Moves the registry's alias (what the scorer follows) with an audit record there too;
    a new champion passes the review gates first (``.check``, before any spec revision)."""
    from serving.registry.gates import GatedAliasSetter

    return GatedAliasSetter(_registry(), why, override=override, gate=gate)


def _check_versions(name: str, versions: list[str]) -> None:
    """Every version a spec names must be registered: fail at deploy time, not at serve time."""
    registry = _registry()
    for v in versions:
        registry.resolve(name, v)


def _show(spec) -> None:
    typer.echo(json.dumps(spec.to_dict(), indent=2))


def register(app: typer.Typer) -> None:
    @app.command("deploy")
    def deploy(
        name: str = typer.Argument(..., help="model name"),
        champion: str | None = typer.Option(None, help="champion model version"),
        arm: list[str] = typer.Option(
            [], help="A/B arm NAME=VERSION:WEIGHT (repeatable; weight 0 removes the arm)"
        ),
        shadow: list[str] = typer.Option(
            [], help="shadow version (repeatable; replaces the list)"
        ),
        no_shadows: bool = typer.Option(False, "--no-shadows", help="remove every shadow"),
        salt: str | None = typer.Option(None, help="experiment salt (a new salt reshuffles arms)"),
        threshold: float | None = typer.Option(None, help="decision threshold for the report"),
        reason: str = typer.Option("", "--why", "-m", help="why (audited)"),
        override: bool = typer.Option(False, help="a new champion that fails its gates (audited)"),
    ) -> None:
        """Create or change NAME's deployment: a new spec revision plus an audit record."""
        from serving.experiments.errors import ExperimentError
        from serving.experiments.spec import Arm, DeploymentSpec, parse_arm

        store = _store()
        if store.revision(name):
            spec = store.current(name)
        elif champion is None:
            raise ExperimentError(f"{name} has no deployment yet; give --champion VERSION")
        else:
            spec = DeploymentSpec(name, champion, salt=salt or name)
        arms: dict[str, Arm] = {a.name: a for a in spec.arms}
        for text in arm:
            a = parse_arm(text) if not text.rstrip().endswith(":0") else None
            if a is None:
                arms.pop(text.split("=", 1)[0].strip(), None)
            else:
                arms[a.name] = a
        new = replace(
            spec,
            champion=champion or spec.champion,
            arms=tuple(arms.values()),
            shadows=() if no_shadows else (tuple(shadow) if shadow else spec.shadows),
            salt=spec.salt if salt is None else salt,
            threshold=spec.threshold if threshold is None else threshold,
        )
        if store.revision(name) and new == spec:
            typer.echo(f"{name}: nothing changed (revision {spec.revision})")
            return
        _check_versions(name, [new.champion, *(a.version for a in new.arms), *new.shadows])
        setter = _alias_setter(reason or "tessera deploy", override=override)
        if not store.revision(name) or new.champion != spec.champion:
            setter.check(name, new.champion)  # review gates, before the revision is written
        saved = store.save(new, why=reason)
        if saved.revision == 1 or saved.champion != spec.champion:
            setter(name, "champion", saved.champion)
        _show(saved)

    @app.command("promote")
    def promote(
        name: str = typer.Argument(..., help="model name"),
        source: str = typer.Option(..., "--from", help="arm name or shadow version to promote"),
        reason: str = typer.Option("", "--why", "-m", help="why (audited)"),
        override: bool = typer.Option(
            False, help="promote even though the review gates fail (needs --why; audited)"
        ),
    ) -> None:
        """Make an arm or shadow the champion (hot-reloaded by running routers), if it passes
        the review gates (`tessera models policy`)."""
        from serving.experiments.promote import promote as do_promote

        setter = _alias_setter(reason, override=override)
        _show(do_promote(_store(), name, source, why=reason, set_alias=setter))

    @app.command("rollback")
    def rollback(
        name: str = typer.Argument(..., help="model name"),
        reason: str = typer.Option("", "--why", "-m", help="why (audited)"),
    ) -> None:
        """Restore the previous champion."""
        from serving.experiments.promote import rollback as do_rollback

        # a rollback restores the previous champion: not gated (the audit says "skipped")
        setter = _alias_setter(reason or "rollback", gate=False)
        _show(do_rollback(_store(), name, why=reason, set_alias=setter))

    experiment = typer.Typer(help="Shadows and A/B experiments: logs, reports, history.")
    app.add_typer(experiment, name="experiment")

    @experiment.command("report")
    def report(
        name: str = typer.Argument(..., help="model name"),
        max_delay: str = typer.Option(
            "7d", help="labels later than this after a prediction are ignored"
        ),
        alpha: float = typer.Option(0.05, help="significance level of the verdicts"),
        reps: int = typer.Option(200, help="bootstrap replicates for the confidence intervals"),
        business: str = typer.Option(
            "accuracy", help="arm business metric: accuracy|positive_rate"
        ),
        decide_on: str = typer.Option(
            "logloss", help="what decides an arm's anytime-valid test: logloss|business"
        ),
        segment: str | None = typer.Option(None, help="metrics by this column, e.g. country"),
        segments: str | None = typer.Option(
            None, help="Parquet lookup with request_id or entity_key and the --segment column"
        ),
        as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    ) -> None:
        """Per arm and shadow vs the champion: metrics, CIs, tests and a verdict."""
        from polars import read_parquet

        from features.semantics.windows import parse_duration
        from serving.experiments.report import experiment_report, format_report

        s = Settings.from_env()
        r = experiment_report(
            s.models_location,
            s.offline_location,
            name,
            max_delay_s=parse_duration(max_delay) / 1e6,
            alpha=alpha,
            reps=reps,
            business=business,
            decide_on=decide_on,
            segment_col=segment,
            segments=None if segments is None else read_parquet(segments),
        )
        typer.echo(json.dumps(r, indent=2) if as_json else format_report(r))

    @experiment.command("sink")
    def sink(
        predictions_topic: str = typer.Option("tessera-predictions", help="prediction log topic"),
        outcomes_topic: str = typer.Option("outcomes", help="outcome (label) topic"),
        idle: float = typer.Option(
            5.0, help="stop after this many seconds with nothing new (0 = run until Ctrl-C)"
        ),
        entity_field: list[str] = typer.Option(
            [], help="outcome fields forming the entity key, in key order (e.g. user_id)"
        ),
    ) -> None:
        """Copy the prediction log and outcomes from Kafka to Parquet (exactly once in effect)."""
        import time

        from features.kafka_admin import create_topics
        from features.kafka_config import KafkaSecurity
        from serving.experiments.records import (
            OUTCOME_SCHEMA,
            PREDICTION_SCHEMA,
            outcome_normalizer,
        )
        from serving.experiments.report import dataset_dirs
        from serving.experiments.sink import ParquetSink

        s = Settings.from_env()
        bootstrap = s.require_kafka()
        security = KafkaSecurity.from_settings(s)
        create_topics([predictions_topic, outcomes_topic], bootstrap, security=security)
        pred_dir, out_dir = dataset_dirs(s.offline_location)
        sinks = [
            ParquetSink(bootstrap, predictions_topic, pred_dir, PREDICTION_SCHEMA,
                        security=security),
            ParquetSink(
                bootstrap, outcomes_topic, out_dir, OUTCOME_SCHEMA,
                normalize=outcome_normalizer(tuple(entity_field)), security=security,
            ),
        ]
        counts = [0, 0]
        last = time.monotonic()
        try:
            while idle <= 0 or time.monotonic() - last < idle:
                got = [sk.poll(timeout_ms=100) for sk in sinks]
                counts = [c + g for c, g in zip(counts, got, strict=True)]
                if any(got):
                    last = time.monotonic()
        except KeyboardInterrupt:
            pass
        finally:
            for sk in sinks:
                sk.close()
        for sk, n in zip(sinks, counts, strict=True):
            typer.echo(f"{sk.topic}: {n} records -> {sk.folder} ({sk.bad_records} malformed)")

    @experiment.command("history")
    def history(name: str = typer.Argument(..., help="model name")) -> None:
        """The audit log of NAME's deployments: who changed what, when and why."""
        for e in _store().audit_log(name):
            after = e.get("after") or {}
            arms = [(a["name"], a["version"], a["weight"]) for a in after.get("arms", [])]
            what = (
                f"alias {e['alias']} -> v{e['version']}"
                if "alias" in e
                else f"revision {after.get('revision')}: champion v{after.get('champion')}, "
                f"arms {arms}, shadows {after.get('shadows')}"
            )
            typer.echo(f"{e.get('when', '')}  {e['who']}: {what}  ({e.get('why') or '-'})")

    @experiment.command("demo")
    def demo(
        requests: int = typer.Option(20_000, help="synthetic requests to serve"),
        rate: float = typer.Option(2000.0, help="requests per second"),
    ) -> None:
        """Champion + A/B arm + shadow on live synthetic traffic, outcomes, then the report."""
        import tempfile
        from pathlib import Path

        from serving.experiments.demo import run_demo
        from tessera.local import start_broker, stop

        s = Settings.from_env()
        with tempfile.TemporaryDirectory() as tmp:
            proc, bootstrap = (None, s.kafka_bootstrap)
            if not bootstrap:
                proc, bootstrap = start_broker(Path(tmp) / "broker")
            try:
                typer.echo(run_demo(s.home, bootstrap, requests=requests, rate=rate))
            finally:
                if proc is not None:
                    stop(proc)
