"""Feature definitions, stores and point-in-time training sets."""

from features.definitions import (
    Aggregate,
    BatchFeatureView,
    Entity,
    EventSource,
    FeatureRepo,
    FeatureView,
    parse_ref,
)
from features.errors import (
    DefinitionError,
    OfflineStoreError,
    OnlineStoreError,
    RegistryError,
    SchemaError,
    TesseraError,
    UnknownFeatureError,
)

__all__ = [
    "Aggregate",
    "BatchFeatureView",
    "DefinitionError",
    "Entity",
    "EventSource",
    "FeatureRepo",
    "FeatureView",
    "OfflineStoreError",
    "OnlineStoreError",
    "RegistryError",
    "RequestFeatureView",
    "SchemaError",
    "TesseraError",
    "UnknownFeatureError",
    "parse_ref",
    "request_feature",
    "training_set",
]


def __getattr__(name: str):
    # lazy: `import features` stays light for the stream worker and the scorer
    if name == "training_set":
        from features.offline.training_set import training_set

        return training_set
    if name in ("RequestFeatureView", "request_feature"):
        from features import request

        return getattr(request, name)
    raise AttributeError(f"module 'features' has no attribute {name!r}")
