"""The monitor's reference lookup, read from registry metadata (no separate reference files)."""

from __future__ import annotations

from serving.monitoring.reference import ModelReference
from serving.monitoring.sources import ModelTarget
from serving.registry.registry import CHAMPION, ModelRegistry


class RegistryReferences:
    """``name -> ModelTarget`` of the version ``alias`` points at: pass it to the monitor."""

    def __init__(self, registry: ModelRegistry, alias: str = CHAMPION) -> None:
        self.registry = registry
        self.alias = alias

    def __call__(self, name: str) -> ModelTarget:
        meta = self.registry.metadata(name, self.alias)
        ref = ModelReference.from_dict(meta["reference"])
        return ModelTarget(meta["version"], ref, tuple(meta["features"]))
