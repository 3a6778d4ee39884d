"""Which feature definitions a command works with: one rule for every command and the scorer.

An explicit ``--repo`` file first, then ``repo`` from the settings (tessera.yaml or
``TESSERA_REPO``), then the registry ``tessera apply`` recorded (``Settings.registry_location``:
under the settings' home, or ``registry_uri`` such as ``s3://...``). The registry is the default
so that a command run from any directory, or any machine, means the same store.
"""

from __future__ import annotations

from pathlib import Path

from features.definitions import FeatureRepo
from features.errors import DefinitionError
from features.settings import Settings


def resolve_repo(path: str | Path | None, settings: Settings) -> FeatureRepo:
    """The feature repo for ``path`` (may be None) under ``settings``."""
    from features.registry import has_registry, load_module, load_repo

    chosen = path or settings.repo
    if chosen:
        return load_module(chosen)
    if has_registry(settings):
        return load_repo(settings)
    raise DefinitionError(
        f"no feature repo: pass --repo path/to/repo.py, set `repo:` in tessera.yaml "
        f"(`tessera init` writes one), or run `tessera apply --repo ...` first "
        f"(no registry at {settings.registry_location})")
