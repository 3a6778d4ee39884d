"""Folding events into tile rings (pure: no I/O).

A ``Ring`` is the decoded value of one Redis hash field (``HopLayout``): the newest event time
applied and ``{tile index: flat IR values}``. ``fold`` merges one event into every ring of its
entity with the scalar algebra of ``features.semantics.aggregations`` — the same ``prepare`` and
``merge`` the offline computation uses, so online and offline agree bit for bit on
counts/min/max/last and to rounding on sums.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from features.definitions import FeatureView
from features.online.layout import EMPTY_TILE, HopLayout, ViewLayout
from features.semantics.aggregations import Aggregation, get_aggregation

NO_EVENT = -(2**63)


class Ring:
    """Mutable decoded ring: newest event time, top tile index, tiles."""

    __slots__ = ("newest", "top", "tiles")

    def __init__(self, newest: int = NO_EVENT, tiles: dict[int, list[float]] | None = None):
        self.newest = newest
        self.tiles = tiles if tiles is not None else {}
        self.top = max(self.tiles) if self.tiles else NO_EVENT


# Inlined ``merge(acc, prepare(value, ts, seq))`` per aggregation, in the algebra's exact
# float operation order (tests check them against the algebra).
COUNT, SUM, MEAN, MIN, MAX, LAST, STDDEV = range(7)
_KINDS = {"count": COUNT, "sum": SUM, "mean": MEAN, "min": MIN, "max": MAX, "last": LAST,
          "stddev": STDDEV}


@dataclass(frozen=True)
class HopPlan:
    """How one event touches one ring: the tile size, ring length and IR parts to update."""

    layout: HopLayout
    hop: int
    slots: int
    parts: tuple[tuple[Aggregation, str | None, int, int], ...]  # agg, event field, start, stop
    empty: tuple[float, ...]
    ops: tuple[tuple[int, int, str | None], ...] = field(default=())  # kind, start, field
    packer: struct.Struct | None = None

    @property
    def field(self) -> str:
        return self.layout.field

    def decode(self, blob: bytes | None) -> Ring:
        if not blob:
            return Ring()
        newest, tiles = self.layout.decode(blob)
        return Ring(newest, {i: list(v) for i, v in tiles.items()})

    def encode(self, ring: Ring) -> bytes:
        """Same bytes as ``HopLayout.encode`` (tested), packed with one struct call."""
        floor = ring.top - self.slots
        for idx in [i for i in ring.tiles if i <= floor]:
            del ring.tiles[idx]
        n = self.slots
        by_slot: list = [None] * n
        for idx in ring.tiles:
            by_slot[idx % n] = idx
        args: list = [ring.newest]
        empty = self.empty
        for idx in by_slot:
            if idx is None:
                args.append(EMPTY_TILE)
                args.extend(empty)
            else:
                args.append(idx)
                args.extend(ring.tiles[idx])
        return self.packer.pack(*args)


def plan_views(views: list[FeatureView]) -> list[HopPlan]:
    """One ``HopPlan`` per (view, hop) ring of every view on a source."""
    plans = []
    for view in views:
        for hop, hl in ViewLayout(view).hops.items():
            parts, ops = [], []
            for (fn, fld), start in zip(hl.parts, hl.offsets, strict=True):
                agg = get_aggregation(fn)
                parts.append((agg, fld, start, start + agg.width))
                ops.append((_KINDS[fn], start, fld))
            packer = struct.Struct("<q" + f"q{hl.width}d" * hl.slots)
            plans.append(HopPlan(hl, hop, hl.slots, tuple(parts), tuple(hl.empty_values()),
                                 tuple(ops), packer))
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
        for kind, a, fld in p.ops:
            if kind == COUNT:
                tile[a] += 1.0
                continue
            v = float(event[fld])
            if kind == SUM:
                tile[a] += v
            elif kind == MEAN:
                tile[a] += 1.0
                tile[a + 1] += v
            elif kind == MAX:
                if v > tile[a]:
                    tile[a] = v
            elif kind == MIN:
                if v < tile[a]:
                    tile[a] = v
            elif kind == LAST:
                if (ts, seq) >= (tile[a], tile[a + 1]):
                    tile[a] = float(ts)
                    tile[a + 1] = float(seq)
                    tile[a + 2] = v
            else:  # STDDEV: Chan et al. merge of (n, mean, m2) with (1, v, 0)
                na = tile[a]
                if na == 0:
                    tile[a], tile[a + 1], tile[a + 2] = 1.0, v, 0.0
                else:
                    n = na + 1.0
                    d = v - tile[a + 1]
                    tile[a + 1] = tile[a + 1] + d * 1.0 / n
                    tile[a + 2] = tile[a + 2] + 0.0 + d * d * na * 1.0 / n
                    tile[a] = n
        if ts > ring.newest:
            ring.newest = ts
