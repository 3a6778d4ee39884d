"""Which feature definitions the scorer reads with: a repo module file, or the registry's."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from features.definitions import BatchFeatureView, Entity, EventSource, FeatureRepo, FeatureView
from features.errors import RegistryError
from features.settings import Settings


def repo_from_file(path: str | Path) -> FeatureRepo:
    """Every definition object found at module level of the Python file ``path``."""
    p = Path(path)
    if not p.exists():
        raise RegistryError(f"feature repo file {p} does not exist")
    spec = importlib.util.spec_from_file_location(f"_tessera_repo_{p.stem}", p)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    kinds = (Entity, EventSource, FeatureView, BatchFeatureView)
    return FeatureRepo.of([v for v in vars(mod).values() if isinstance(v, kinds)])


def load_feature_repo(path: str | Path | None, settings: Settings) -> FeatureRepo:
    """``path`` when given, else the applied registry (``tessera apply``)."""
    if path:
        return repo_from_file(path)
    try:
        from features.registry import load_repo  # type: ignore[import-not-found]
    except ImportError:
        raise RegistryError(
            "no feature registry in this installation; pass --repo path/to/feature_repo.py"
        ) from None
    return load_repo(settings)
