"""Typed errors. Each message says what was wrong and what to do about it."""


class TesseraError(Exception):
    """Base class of every error Tessera raises on purpose."""


class DefinitionError(TesseraError):
    """A feature definition (entity, source, view, aggregation, window) is invalid."""


class SchemaError(TesseraError):
    """An event does not match its source's schema."""

    def __init__(self, message: str, field: str | None = None,
                 reason: str = "invalid_event") -> None:
        super().__init__(message)
        self.field = field
        # a stable code for dead letters and metrics: invalid_json, invalid_event, null_value,
        # empty_value, future_timestamp
        self.reason = reason


class UnknownFeatureError(TesseraError):
    """A feature reference names no registered view or feature."""


class RegistryError(TesseraError):
    """The registry is missing, corrupt, or does not hold what was asked for."""


class OfflineStoreError(TesseraError):
    """The offline store cannot serve a request (missing files, bad spine, ...)."""


class OnlineStoreError(TesseraError):
    """The online store is unreachable or too slow."""
