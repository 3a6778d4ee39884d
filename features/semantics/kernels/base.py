"""The verbs every aggregation implements, scalar and vectorised (after Chronon's aggregators).

Each aggregation has an intermediate representation (IR): a fixed-width tuple of floats, so
tiles pack into fixed-size binary records. The scalar verbs define the algebra:

* ``prepare(value, ts, seq)`` -> IR of one event (``seq`` = log order, breaks ties);
* ``merge(a, b)`` -> IR; associative, with ``empty()`` as identity, so tiles fold in any grouping;
* ``finalize(ir)`` -> the feature value (``None`` for an empty window, except count/sum -> 0).

The IR is not the answer: ``Mean`` keeps ``(n, sum)`` and divides only in ``finalize``.
Timestamps and sequence numbers ride as floats; both stay below 2**53, so they are exact.

The vectorised kernels do the same work on numpy arrays, one per job of the system:

* ``fold_events``: merge a batch of events into tiles (the stream worker, a rebuild);
* ``merge_tiles``: fold the tiles of a window for many rings at once (the online read);
* ``read_tiles``: the same for one ring, on Python tuples (the online read of one entity);
* ``reduce_ranges``: the value over index ranges of sorted events (training sets).

Each default implementation is the scalar algebra applied element by element, so a new
aggregation is correct with its four scalar verbs alone and fast once it overrides the kernels.
Every kernel gives the bits of the scalar merge chain it replaces (``fold_events``,
``merge_tiles``, ``read_tiles``) or agrees with the brute-force reference
(``reduce_ranges``: exactly when ``exact``, else to rounding):
``tests/features/semantics/test_kernels.py``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

import numpy as np

IR = tuple[float, ...]
INF = math.inf

# name -> aggregation, filled by ``Aggregation.__init_subclass__`` (see ``aggregations.py``)
REGISTRY: dict[str, Aggregation] = {}


class Aggregation(ABC):
    """One aggregation function: its IR width, whether it reads a field, its verbs."""

    name: str = ""
    width: int = 1
    needs_field: bool = True
    # whether the offline and online paths agree exactly; False: to a relative 1e-9, as sums
    # add in a different grouping (tiles online, events offline)
    exact: bool = True
    # from how many rings on ``merge_tiles`` beats ``read_tiles`` ring by ring: the default
    # loops over the tiles with a few numpy calls each, a fixed cost that pays off only on many
    vector_min_rows: int = 64

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name and not getattr(cls, "__abstractmethods__", None):
            if cls.name in REGISTRY:
                raise ValueError(f"aggregation {cls.name!r} is defined twice")
            REGISTRY[cls.name] = cls()

    # --- the scalar algebra ------------------------------------------------------------------

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

    # --- kernels -----------------------------------------------------------------------------

    def fold_events(self, tiles: np.ndarray, inv: np.ndarray, ts: np.ndarray,
                    seq: np.ndarray, values: np.ndarray | None) -> None:
        """In place: for each event ``i`` in order, ``tiles[inv[i]] = merge(tiles[inv[i]],
        prepare(values[i], ts[i], seq[i]))``. ``tiles`` is a ``(tiles, width)`` float64 view
        (a slice of the ring records); ``values`` is None when the aggregation reads no field."""
        for i, g in enumerate(inv.tolist()):
            v = 0.0 if values is None else float(values[i])
            ir = self.prepare(v, int(ts[i]), int(seq[i]))
            tiles[g] = self.merge(tuple(tiles[g].tolist()), ir)

    def merge_arrays(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``merge`` row by row of two ``(rows, width)`` IR arrays."""
        return np.array([self.merge(tuple(x), tuple(y))
                         for x, y in zip(a.tolist(), b.tolist(), strict=True)],
                        dtype=np.float64).reshape(a.shape)

    def merge_tiles(self, v: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray,
                                                                       np.ndarray | None]:
        """Per row, the fold (from ``empty``) of the tiles ``v[r, k]`` with ``mask[r, k]``, in
        ``k`` order: ``v`` is ``(rows, tiles, width)``, the result ``(rows, width)``. Second:
        rows whose result the caller must recompute with ``read_tiles`` (or None)."""
        acc = np.broadcast_to(np.array(self.empty(), dtype=np.float64),
                              (v.shape[0], self.width)).copy()
        for k in range(v.shape[1]):
            m = mask[:, k]
            if m.any():
                acc = np.where(m[:, None], self.merge_arrays(acc, v[:, k, :]), acc)
        return acc, None

    def finalize_list(self, ir: np.ndarray) -> list:
        """``finalize`` of each row of a ``(rows, width)`` IR array, as Python values."""
        return [self.finalize(tuple(r)) for r in ir.tolist()]

    def read_tiles(self, records: Sequence[Sequence[float]], j: int) -> float | int | None:
        """The value over whole tile records (flat IR tuples of a ring, oldest first) whose
        part for this aggregation starts at index ``j``."""
        w = self.width
        acc = self.empty()
        for r in records:
            acc = self.merge(acc, tuple(r[j:j + w]))
        return self.finalize(acc)

    def reduce_ranges(self, values: np.ndarray | None, lo: np.ndarray,
                      hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Value over ``values[lo:hi]`` per range (events sorted by (entity, ts, log order)),
        and a mask of the non-null ones. The default prepares each event with ``ts`` 0 and
        its position as ``seq``: positions order a range as (ts, log order) do."""
        n = hi - lo
        out = np.full(len(n), np.nan)
        valid = np.zeros(len(n), dtype=bool)
        for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
            acc = self.fold(self.prepare(0.0 if values is None else float(values[k]), 0, k)
                            for k in range(a, b))
            value = self.finalize(acc)
            if value is not None:
                out[i], valid[i] = value, True
        return out, valid

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def range_reduce(ufunc: np.ufunc, values: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                 empty: float) -> np.ndarray:
    """``ufunc.reduce(values[lo:hi])`` per range, ``empty`` where ``lo == hi``.

    ``reduceat`` reduces between consecutive indices, so ranges are visited in order of ``lo``
    and interleaved ``[lo0, hi0, lo1, hi1, ...]``; the in-between segments it also reduces are
    disjoint, so the work is O(events + total range length).
    """
    out = np.full(len(lo), empty, dtype=np.float64)
    nonempty = np.flatnonzero(hi > lo)
    if len(nonempty) == 0:
        return out
    order = nonempty[np.argsort(lo[nonempty], kind="stable")]  # O(n) when already sorted
    padded = np.append(values.astype(np.float64, copy=False), 0.0)
    idx = np.empty(2 * len(order), dtype=np.int64)
    idx[0::2] = lo[order]
    idx[1::2] = hi[order]
    out[order] = ufunc.reduceat(padded, idx)[0::2]
    return out


def ordered_sums(v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row of ``(rows, tiles, width)`` tiles, ``0.0 + x0 + x1 + ...`` over the masked tiles
    in tile order, per IR column: the bits of a left-to-right ``merge`` chain of sums from
    ``0.0``. A sequential ``cumsum`` (adding 0.0 for a tile outside the window changes nothing);
    starting from ``x0`` instead of ``0.0 + x0`` can only differ in the sign of a zero, which the
    final ``+ 0.0`` settles as the chain does (it never ends at -0.0)."""
    x = np.where(mask[:, :, None], v, 0.0)
    np.cumsum(x, axis=1, out=x)
    return x[:, -1, :] + 0.0
