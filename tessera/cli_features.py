"""``tessera apply | features list|describe | training-set | import-events | compact``:
definitions, the feature catalog and the offline store. The catalog's join of the feature
registry with the model registry is ``serving.http.catalog``'s, the one ``/v1/catalog`` serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from features.errors import OfflineStoreError, RegistryError
from features.settings import Settings

MODELS_URI = typer.Option(
    None, "--models-uri", envvar="TESSERA_MODELS_URI",
    help="model registry, to see which models read each view (default $TESSERA_HOME/models)",
)


def _users(settings: Settings, models_uri: str | None) -> dict[str, list[dict[str, Any]]]:
    """View name -> the registered model versions reading it (``serving.http.catalog``)."""
    from serving.http.catalog import models_using
    from serving.registry import ModelRegistry

    return models_using(ModelRegistry(models_uri or settings.models_location))


def _blocked(the_plan, users: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Why the plan would break a model an alias points at: a view it reads removed, or
    changed to a version it was not trained on."""
    from serving.http.catalog import aliased_users

    out = []
    for c in the_plan.by_status("removed", "changed"):
        hit = [u for u in aliased_users(users.get(c.name, []))
               if c.status == "removed" or u["view_version"] != c.after]
        if hit:
            who = ", ".join(f"{u['model']} v{u['version']} ({'/'.join(u['aliases'])})"
                            for u in hit)
            verb = "remove" if c.status == "removed" else f"change ({c.before} -> {c.after})"
            out.append(f"{verb} view {c.name!r}, read by {who}")
    return out


def _views(settings: Settings, repo: Path | None) -> dict:
    from features.registry import load_module, load_repo

    return (load_module(repo) if repo else load_repo(settings)).views


def _models_cell(users: list[dict[str, Any]]) -> str:
    if not users:
        return "-"
    return ",".join(f"{u['model']}@{u['version']}" + (f"({'/'.join(u['aliases'])})"
                                                      if u["aliases"] else "")
                    for u in users)


def _describe_lines(d: dict[str, Any]) -> list[str]:
    out = [f"view:        {d['name']} ({d['kind']})", f"version:     {d['version']}",
           f"entity:      {d['entity']['name']} (keys: {', '.join(d['entity']['keys'])})"]
    src = d["source"]
    if d["kind"] == "windowed":
        out.append(f"source:      {src['name']} (topic {src['topic']}, {src['partitions']} "
                   f"partitions, event time {src['timestamp_field']})")
    else:
        out.append(f"source:      {src['path']} (time {src['timestamp_field']}, ttl {d['ttl']})")
    out.append(f"description: {d['description'] or '-'}")
    tags = ", ".join(f"{k}={v}" for k, v in sorted(d["tags"].items()))
    out.append(f"tags:        {tags or '-'}")
    out.append("features:")
    for f in d["features"]:
        if d["kind"] == "windowed":
            agg = f"{f['aggregation']}({f['field'] or ''})"
            out.append(f"  {f['name']:<28} {f['type']:<6} {agg:<22} window {f['window']:<5} "
                       f"hop {f['hop']}")
        else:
            out.append(f"  {f['name']:<28} {f['type']}")
    out.append("models:" + ("" if d["models"] else " none registered"))
    for u in d["models"]:
        aliases = f" ({', '.join(u['aliases'])})" if u["aliases"] else ""
        trained = f", trained on {u['view_version']}" if u["view_version"] else ""
        out.append(f"  {u['model']} v{u['version']}{aliases}{trained}")
    return out


def _source(settings: Settings, name: str):
    from features.registry import load_repo

    repo = load_repo(settings)
    if name not in repo.sources:
        raise RegistryError(f"no event source {name!r} in the registry; known: "
                            f"{', '.join(sorted(repo.sources)) or 'none'} (run `tessera apply`)")
    return repo.sources[name]


def register(app: typer.Typer) -> None:
    @app.command("apply")
    def apply_cmd(
        repo: Path | None = typer.Option(
            None, "--repo", help="Python module defining the features (default: `repo` in "
                                 "tessera.yaml / TESSERA_REPO)"),
        topics: bool = typer.Option(True, help="create the sources' topics if a broker is set"),
        force: bool = typer.Option(False, "--force", help="change or remove views that models "
                                   "with an alias still read"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print the plan, change nothing"),
        models_uri: str | None = MODELS_URI,
    ) -> None:
        """Show the plan (new / changed / removed views), then record each view under its
        content hash. Refuses to change or remove a view an aliased model reads, unless --force."""
        from features.registry import apply, load_module, plan

        settings = Settings.from_env()
        if repo is None and settings.repo is None:
            raise RegistryError("which feature repo? pass --repo path/to/repo.py or set `repo:` "
                                "in tessera.yaml (`tessera init` writes one)")
        definitions = load_module(repo or settings.repo)
        the_plan = plan(definitions, settings)
        for line in the_plan.lines():
            typer.echo(line)
        blocked = _blocked(the_plan, _users(settings, models_uri))
        if blocked and not force:
            raise RegistryError("refusing to apply: " + "; ".join(blocked) + ". Retrain or move "
                                "those aliases first, or re-run with --force")
        for line in blocked:
            typer.echo(f"warning (--force): {line}")
        if dry_run:
            typer.echo("dry run: nothing applied")
            return
        report = apply(definitions, settings, plan=the_plan)  # refused if the registry moved
        typer.echo(f"applied: {len(definitions.views)} views current"
                   + ("" if not the_plan.by_status("removed") else ", removed: " + ", ".join(
                       c.name for c in the_plan.by_status("removed"))))
        if topics and settings.kafka_bootstrap:
            from features.kafka_config import KafkaSecurity
            from streams.topics import ensure_topics

            created = ensure_topics(report.sources, settings.kafka_bootstrap,
                                    security=KafkaSecurity.from_settings(settings))
            typer.echo(f"topics created: {', '.join(created) or 'none (all exist)'}")
        typer.echo(f"registry: {settings.registry_location}")

    features_app = typer.Typer(help="The feature catalog: applied views and who uses them.")
    app.add_typer(features_app, name="features")

    @features_app.command("list")
    def list_cmd(
        repo: Path | None = typer.Option(None, "--repo", help="a repo module instead of the "
                                         "applied registry"),
        models_uri: str | None = MODELS_URI,
    ) -> None:
        """Every view: kind, entity, version, feature count, models reading it, description."""
        from features.registry import describe

        settings = Settings.from_env()
        views = _views(settings, repo)
        users = _users(settings, models_uri)
        rows = [("VIEW", "KIND", "ENTITY", "VERSION", "FEATURES", "MODELS", "DESCRIPTION")]
        for name in sorted(views):
            d = describe(views[name])
            rows.append((name, d["kind"], d["entity"]["name"], d["version"],
                         str(len(d["features"])), _models_cell(users.get(name, [])),
                         d["description"]))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for r in rows:
            typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False))
                       + "  " + r[-1])

    @features_app.command("describe")
    def describe_cmd(
        view: str = typer.Argument(..., help="view name"),
        as_json: bool = typer.Option(False, "--json", help="the catalog entry as JSON"),
        repo: Path | None = typer.Option(None, "--repo", help="a repo module instead of the "
                                         "applied registry"),
        models_uri: str | None = MODELS_URI,
    ) -> None:
        """One view: entity, source, features (type, window, hop), version, description, tags,
        and the registered models that read it."""
        from features.errors import UnknownFeatureError
        from features.registry import describe

        settings = Settings.from_env()
        views = _views(settings, repo)
        if view not in views:
            raise UnknownFeatureError(f"no feature view {view!r}; known views: "
                                      f"{', '.join(sorted(views)) or 'none'}")
        d = describe(views[view])
        d["models"] = _users(settings, models_uri).get(view, [])
        if as_json:
            typer.echo(json.dumps(d, indent=2, sort_keys=True))
            return
        for line in _describe_lines(d):
            typer.echo(line)

    @app.command("training-set")
    def training_set_cmd(
        spine: Path = typer.Option(..., help="Parquet or CSV: entity keys, timestamp, labels"),
        features: str = typer.Option(..., help="comma-separated view:feature references"),
        out: Path = typer.Option(..., help="output Parquet file"),
        engine: str = typer.Option("polars", help="polars (this process) or spark (the same "
                                   "values; needs pip install 'tessera[spark]')"),
        master: str = typer.Option(None, help="Spark master URL for --engine spark "
                                   "(default local[2])"),
        timestamp_column: str = typer.Option("ts", help="the spine's timestamp column"),
        timeline: str = typer.Option("corrected", help="'corrected': events count from their "
                                     "event time; 'served': only once the online store had "
                                     "applied them (what a read returned then)"),
        diff_timelines: bool = typer.Option(False, "--diff-timelines", help="also report how "
                                            "many rows and values differ between the two "
                                            "timelines, and why (late, not yet applied)"),
    ) -> None:
        """Point-in-time correct features for every spine row, written to --out."""
        from features.offline.training_set import build_training_set, write_training_set

        refs = [r.strip() for r in features.split(",") if r.strip()]
        if not refs:
            raise OfflineStoreError("--features is empty; give e.g. user_spend:amount_sum_1h")
        if timeline not in ("corrected", "served"):
            raise OfflineStoreError(f"--timeline {timeline!r}: use 'corrected' or 'served'")
        ts = build_training_set(spine, refs, settings=Settings.from_env(),
                                timestamp_column=timestamp_column, timeline=timeline,
                                engine=engine, master=master)
        write_training_set(ts.frame, out, ts.fingerprint)
        if diff_timelines:
            from features.offline.timeline_diff import diff_timelines as diff

            for line in diff(spine, refs, settings=Settings.from_env(),
                             timestamp_column=timestamp_column).lines():
                typer.echo(line)
        typer.echo(f"rows: {ts.frame.height}")
        typer.echo(f"features: {len(refs)}")
        typer.echo(f"fingerprint: {ts.fingerprint}")
        typer.echo(f"written: {out}")

    @app.command("import-events")
    def import_events_cmd(
        source: str = typer.Option(..., help="event source name"),
        file: Path = typer.Option(..., help="Parquet, CSV or JSONL file of events"),
    ) -> None:
        """Import your own event file into the offline log (idempotent)."""
        from features.offline.event_log import EventLog

        settings = Settings.from_env()
        n = EventLog(settings.offline_location).import_file(_source(settings, source), file)
        typer.echo(f"imported {n} events into {source}" + ("" if n else " (already imported)"))

    @app.command("compact")
    def compact_cmd(source: str = typer.Option(..., help="event source name")) -> None:
        """Merge each date partition's small files into one (results do not change)."""
        from features.offline.event_log import EventLog

        settings = Settings.from_env()
        n = EventLog(settings.offline_location).compact(_source(settings, source))
        typer.echo(f"compacted {source}: {n} files merged")
