"""``tessera init``: a starter project, so commands work from any folder below it."""

from __future__ import annotations

from pathlib import Path

import typer

PROJECT_YAML = """\
# Tessera project settings. Commands find this file from the current folder upward;
# environment variables override it (TESSERA_HOME, KAFKA_BOOTSTRAP, REDIS_URL, TESSERA_REPO,
# TESSERA_SERVE__<FIELD>), and command flags override both. Paths are relative to this file.
home: .tessera            # registries, event log, models
repo: feature_repo.py     # the feature definitions every command uses
# kafka_bootstrap: localhost:9092   # unset: the broker `tessera up` started
# redis_url: redis://localhost:6379/0
serve:
  redis_timeout_ms: 100
  max_entities: 1000
  log_vectors: false      # true: log feature vectors, for per-feature drift in `tessera monitor`
"""

FEATURE_REPO = '''\
"""Feature definitions: `tessera apply` records them; the stream worker and the training-set
builder both compute from them."""

from features import Aggregate, Entity, EventSource, FeatureView

user = Entity("user", keys=["user_id"], description="A card holder")

transactions = EventSource(
    name="transactions",
    schema={"user_id": "string", "amount": "float", "ts": "timestamp"},
    timestamp_field="ts",
    entity=user,
    partitions=4,
)

user_spend = FeatureView(
    "user_spend",
    transactions,
    [Aggregate("count", ["1h", "24h"]), Aggregate("sum", ["1h", "24h"], field="amount")],
)
'''


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init_cmd(
        folder: Path = typer.Argument(Path("."), help="project folder (created if missing)"),
        force: bool = typer.Option(False, "--force", help="overwrite existing files"),
    ) -> None:
        """Write tessera.yaml and a starter feature_repo.py."""
        from features.errors import DefinitionError
        from features.settings import PROJECT_FILE

        folder.mkdir(parents=True, exist_ok=True)
        files = {folder / PROJECT_FILE: PROJECT_YAML, folder / "feature_repo.py": FEATURE_REPO}
        existing = [str(p) for p in files if p.exists()]
        if existing and not force:
            raise DefinitionError(f"{', '.join(existing)} already exist(s); pass --force to "
                                  "overwrite")
        for path, text in files.items():
            path.write_text(text)
            typer.echo(f"wrote {path}")
        typer.echo(f"next: cd {folder} && tessera up && tessera apply && tessera worker")
