"""The aggregation algebra shared by the stream worker, the online read and the offline builder.

Each aggregation has an intermediate representation (IR): a fixed-width tuple of floats, so that
tiles pack into fixed-size binary records. Four verbs (after Chronon's ``BaseAggregator``):

* ``prepare(value, ts, seq)`` -> IR of one event (``seq`` = log order, breaks ``last`` ties);
* ``merge(a, b)`` -> IR; associative, with ``empty()`` as identity, so tiles fold in any grouping;
* ``finalize(ir)`` -> the feature value (``None`` for an empty window, except count/sum -> 0);
* ``empty()`` -> the IR of no events.

The IR is not the answer: ``Mean`` keeps ``(n, sum)`` and divides only in ``finalize``.
Timestamps and sequence numbers ride as floats; both stay below 2**53, so they are exact.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable

from features.errors import DefinitionError

IR = tuple[float, ...]
_INF = math.inf


class Aggregation(ABC):
    """One aggregation function: its IR width, verbs and whether it reads a field."""

    name: str = ""
    width: int = 1
    needs_field: bool = True

    @abstractmethod
    def empty(self) -> IR: ...

    @abstractmethod
    def prepare(self, value: float, ts: int, seq: int) -> IR: ...

    @abstractmethod
    def merge(self, a: IR, b: IR) -> IR: ...

    @abstractmethod
    def finalize(self, ir: IR) -> float | int | None: ...

    def fold(self, irs: Iterable[IR]) -> IR:
        """Merge many IRs left to right (oldest first)."""
        acc = self.empty()
        for ir in irs:
            acc = self.merge(acc, ir)
        return acc

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Count(Aggregation):
    """Number of events in the window; 0 when empty."""

    name = "count"
    needs_field = False

    def empty(self) -> IR:
        return (0.0,)

    def prepare(self, value: float, ts: int, seq: int) -> IR:
        return (1.0,)

    def merge(self, a: IR, b: IR) -> IR:
        return (a[0] + b[0],)

    def finalize(self, ir: IR) -> int:
        return int(ir[0])


class Sum(Aggregation):
    """Sum of the field over the window; 0 when empty."""

    name = "sum"

    def empty(self) -> IR:
        return (0.0,)

    def prepare(self, value: float, ts: int, seq: int) -> IR:
        return (float(value),)

    def merge(self, a: IR, b: IR) -> IR:
        return (a[0] + b[0],)

    def finalize(self, ir: IR) -> float:
        return ir[0]


class Mean(Aggregation):
    """Arithmetic mean of the field; null when empty. State is ``(count, sum)``."""

    name = "mean"
    width = 2

    def empty(self) -> IR:
        return (0.0, 0.0)

    def prepare(self, value: float, ts: int, seq: int) -> IR:
        return (1.0, float(value))

    def merge(self, a: IR, b: IR) -> IR:
        return (a[0] + b[0], a[1] + b[1])

    def finalize(self, ir: IR) -> float | None:
        return ir[1] / ir[0] if ir[0] else None


class Min(Aggregation):
    """Smallest value of the field; null when empty."""

    name = "min"

    def empty(self) -> IR:
        return (_INF,)

    def prepare(self, value: float, ts: int, seq: int) -> IR:
        return (float(value),)

    def merge(self, a: IR, b: IR) -> IR:
        return a if a[0] <= b[0] else b

    def finalize(self, ir: IR) -> float | None:
        return None if ir[0] == _INF else ir[0]


class Max(Aggregation):
    """Largest value of the field; null when empty."""

    name = "max"

    def empty(self) -> IR:
        return (-_INF,)

    def prepare(self, value: float, ts: int, seq: int) -> IR:
        return (float(value),)

    def merge(self, a: IR, b: IR) -> IR:
        return a if a[0] >= b[0] else b

    def finalize(self, ir: IR) -> float | None:
        return None if ir[0] == -_INF else ir[0]


class Last(Aggregation):
    """Value of the event with the greatest event time; ties go to the later one in the log.

    State is ``(ts, seq, value)``; ``seq`` is the log position (Kafka offset, or row order in
    an offline file), compared only between events of one entity.
    """

    name = "last"
    width = 3

    def empty(self) -> IR:
        return (-_INF, -_INF, math.nan)

    def prepare(self, value: float, ts: int, seq: int) -> IR:
        return (float(ts), float(seq), float(value))

    def merge(self, a: IR, b: IR) -> IR:
        return b if (b[0], b[1]) >= (a[0], a[1]) else a

    def finalize(self, ir: IR) -> float | None:
        return None if ir[0] == -_INF else ir[2]


class Stddev(Aggregation):
    """Population standard deviation of the field; null when empty.

    State is ``(n, mean, m2)`` merged with Chan et al.'s parallel formula, which stays accurate
    where ``sum of squares - square of sum`` would cancel.
    """

    name = "stddev"
    width = 3

    def empty(self) -> IR:
        return (0.0, 0.0, 0.0)

    def prepare(self, value: float, ts: int, seq: int) -> IR:
        return (1.0, float(value), 0.0)

    def merge(self, a: IR, b: IR) -> IR:
        na, nb = a[0], b[0]
        if nb == 0:
            return a
        if na == 0:
            return b
        n = na + nb
        d = b[1] - a[1]
        return (n, a[1] + d * nb / n, a[2] + b[2] + d * d * na * nb / n)

    def finalize(self, ir: IR) -> float | None:
        if ir[0] == 0:
            return None
        return math.sqrt(max(ir[2], 0.0) / ir[0])


AGGREGATIONS: dict[str, Aggregation] = {
    a.name: a for a in (Count(), Sum(), Mean(), Min(), Max(), Last(), Stddev())
}


def get_aggregation(name: str) -> Aggregation:
    """Look up an aggregation by name, with the list of valid names in the error."""
    try:
        return AGGREGATIONS[name]
    except KeyError:
        raise DefinitionError(
            f"unknown aggregation {name!r}; choose one of {', '.join(AGGREGATIONS)}"
        ) from None
