"""The experiments' typed error; its messages say what to do."""

from features.errors import TesseraError


class ExperimentError(TesseraError):
    """A deployment spec, experiment log or report request is invalid or incomplete."""
