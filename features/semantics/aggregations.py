"""The registry of aggregations: name -> the one object that owns its math.

Every path that computes a windowed feature looks its aggregation up here: the stream worker
folding events into tiles (``fold_events``), the online read folding tiles (``merge_tiles``,
``read_tiles``), the training-set builder reducing ranges of the event log (``reduce_ranges``)
and the synthetic state of the benchmarks (``prepare``/``merge``). The verbs are described in
``features.semantics.kernels.base``; each aggregation is one class in ``kernels/`` and
registers itself by its ``name``.
"""

from __future__ import annotations

from features.errors import DefinitionError

# importing the families registers their classes
from features.semantics.kernels import extremes, moments, ordered, sums  # noqa: F401
from features.semantics.kernels.base import IR, REGISTRY, Aggregation

__all__ = ["AGGREGATIONS", "IR", "Aggregation", "get_aggregation"]

AGGREGATIONS: dict[str, Aggregation] = REGISTRY


def get_aggregation(name: str) -> Aggregation:
    """Look up an aggregation by name, with the list of valid names in the error."""
    try:
        return AGGREGATIONS[name]
    except KeyError:
        raise DefinitionError(
            f"unknown aggregation {name!r}; choose one of {', '.join(sorted(AGGREGATIONS))}"
        ) from None
