"""Folding events into tile rings (pure: no I/O).

A ``Ring`` is the decoded value of one Redis hash field (``HopLayout``): the newest event time
applied and ``{tile index: flat IR values}``. ``fold`` merges one event into every ring of its
entity with the scalar algebra of ``features.semantics.aggregations`` — the same ``prepare`` and
``merge`` the offline computation uses, so online and offline agree bit for bit on
counts/min/max/last and to rounding on sums.
"""

from __future__ import annotations

from dataclasses import dataclass

from features.definitions import FeatureView
from features.online.layout import HopLayout, ViewLayout
from features.semantics.aggregations import Aggregation, get_aggregation

NO_EVENT = -(2**63)


class Ring:
    """Mutable decoded ring: newest event time, top tile index, tiles."""

    __slots__ = ("newest", "top", "tiles")

    def __init__(self, newest: int = NO_EVENT, tiles: dict[int, list[float]] | None = None):
        self.newest = newest
        self.tiles = tiles if tiles is not None else {}
        self.top = max(self.tiles) if self.tiles else NO_EVENT


@dataclass(frozen=True)
class HopPlan:
    """How one event touches one ring: the tile size, ring length and IR parts to update."""

    layout: HopLayout
    hop: int
    slots: int
    parts: tuple[tuple[Aggregation, str | None, int, int], ...]  # agg, event field, start, stop
    empty: tuple[float, ...]

    @property
    def field(self) -> str:
        return self.layout.field

    def decode(self, blob: bytes | None) -> Ring:
        if not blob:
            return Ring()
        newest, tiles = self.layout.decode(blob)
        return Ring(newest, {i: list(v) for i, v in tiles.items()})

    def encode(self, ring: Ring) -> bytes:
        floor = ring.top - self.slots
        for idx in [i for i in ring.tiles if i <= floor]:
            del ring.tiles[idx]
        return self.layout.encode(ring.newest, ring.tiles)


def plan_views(views: list[FeatureView]) -> list[HopPlan]:
    """One ``HopPlan`` per (view, hop) ring of every view on a source."""
    plans = []
    for view in views:
        for hop, hl in ViewLayout(view).hops.items():
            parts = []
            for (fn, fld), start in zip(hl.parts, hl.offsets, strict=True):
                agg = get_aggregation(fn)
                parts.append((agg, fld, start, start + agg.width))
            plans.append(HopPlan(hl, hop, hl.slots, tuple(parts), tuple(hl.empty_values())))
    return plans


def fold(rings: list[Ring], plans: list[HopPlan], event: dict, ts: int, seq: int) -> None:
    """Merge one event (event time ``ts``, log position ``seq``) into its entity's rings.

    A tile older than the ring can hold (``top - slots``) is skipped: no read at or after the
    ring's newest tile can see it.
    """
    for ring, p in zip(rings, plans, strict=True):
        idx = ts // p.hop
        if idx <= ring.top - p.slots:
            continue
        tile = ring.tiles.get(idx)
        if tile is None:
            tile = ring.tiles[idx] = list(p.empty)
            if idx > ring.top:
                ring.top = idx
        for agg, fld, a, b in p.parts:
            value = event[fld] if fld is not None else 0.0
            tile[a:b] = agg.merge(tile[a:b], agg.prepare(value, ts, seq))
        if ts > ring.newest:
            ring.newest = ts
