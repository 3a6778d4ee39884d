"""Typed errors of monitoring; each says what to do."""

from features.errors import TesseraError


class MonitorError(TesseraError):
    """A reference distribution, a prediction window or a monitor setting is unusable."""
