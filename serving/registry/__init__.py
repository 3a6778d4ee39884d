"""Model registry: versions in LightGBM text format, aliases, audit log, training, review
gates, model cards."""

from serving.registry.errors import GateFailed, TrainingRefused
from serving.registry.gates import GatePolicy
from serving.registry.registry import CHAMPION, ModelRegistry, ModelVersion, set_alias

__all__ = ["CHAMPION", "GateFailed", "GatePolicy", "ModelRegistry", "ModelVersion",
           "TrainingRefused", "set_alias"]
