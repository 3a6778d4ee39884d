"""Which feature definitions a command works with: one rule for every command and the scorer.

An explicit ``--repo`` file first, then ``repo`` from the settings (tessera.yaml or
``TESSERA_REPO``), then the registry ``tessera apply`` recorded under the settings' home. The
registry is the default so that a command run from any directory means the same store.
"""

from __future__ import annotations

from pathlib import Path

from features.definitions import FeatureRepo
from features.errors import DefinitionError
from features.settings import Settings


def resolve_repo(path: str | Path | None, settings: Settings) -> FeatureRepo:
    """The feature repo for ``path`` (may be None) under ``settings``."""
    from features.registry import load_module, load_repo

    chosen = path or settings.repo
    if chosen:
        return load_module(chosen)
    if (settings.registry_dir / "current.json").exists():
        return load_repo(settings)
    raise DefinitionError(
        f"no feature repo: pass --repo path/to/repo.py, set `repo:` in tessera.yaml "
        f"(`tessera init` writes one), or run `tessera apply --repo ...` first "
        f"(no registry under {settings.home})")
