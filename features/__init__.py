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
    "SchemaError",
    "TesseraError",
    "UnknownFeatureError",
    "parse_ref",
]
