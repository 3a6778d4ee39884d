"""Model registry: versions in LightGBM text format, aliases, audit log, training."""

from serving.registry.registry import CHAMPION, ModelRegistry, ModelVersion, set_alias

__all__ = ["CHAMPION", "ModelRegistry", "ModelVersion", "set_alias"]
