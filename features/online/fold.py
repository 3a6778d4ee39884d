"""Read-time folding: turn stored tile rings into feature values at a query time.

This is where windows expire: nothing is precomputed per window, so a read at a later ``t``
simply folds a later range of tiles, whether or not new events arrived.

Which times a ring answers exactly (``docs/serving.md``, "Reads at a past time"): the value
at ``t`` aggregates events with ``start(t) <= ts < t``, i.e. the whole tiles from
``tile(t) - W/h`` up to ``tile(t) - 1`` plus the events of ``tile(t)`` before ``t``. A ring
stores whole tiles and the newest event time applied to it (its header), so

- ``t`` after the ring's newest event: exact (``tile(t)`` holds no event at or after ``t``,
  and the ring holds every tile a window ending after its newest tile needs);
- ``t`` at or before the newest event and on the hop grid (``t % h == 0``): exact when the
  window's oldest tile is still held (newer than the ring's newest tile minus its slots), since
  the read then folds whole tiles below ``t`` only;
- any other ``t``: ``InexactReadError``, never a number.
"""

from __future__ import annotations

from features.errors import TesseraError
from features.online.codec import EMPTY_TILE
from features.online.layout import FeatureSlot, HopLayout
from features.semantics.aggregations import get_aggregation
from features.semantics.windows import format_duration, tile_of


def _iso(us: int) -> str:
    from features.event_schema import us_to_iso

    return us_to_iso(us)


class InexactReadError(TesseraError):
    """A read at a past time the stored tiles cannot answer exactly (HTTP 422).

    ``earliest_us`` is the earliest time the same read is exact at (a multiple of ``hop_us``);
    any time after ``newest_us`` is exact too. ``entity`` is filled in by the online store."""

    def __init__(self, feature: str, at_us: int, newest_us: int, earliest_us: int, hop_us: int,
                 pruned: bool) -> None:
        self.feature = feature
        self.at_us = at_us
        self.newest_us = newest_us
        self.earliest_us = earliest_us
        self.hop_us = hop_us
        self.pruned = pruned
        self.entity: str | None = None
        self.row: int | None = None  # the entity row of a batch, for the store to name it
        super().__init__(self._message())

    def _message(self) -> str:
        who = f"{self.feature} of {self.entity}" if self.entity else self.feature
        why = (
            "the tiles its window needs are no longer stored (the ring keeps only the newest "
            "ones)" if self.pruned else
            f"the stored tiles already count events up to {_iso(self.newest_us)}, and "
            f"{_iso(self.at_us)} is inside a {format_duration(self.hop_us)} tile"
        )
        return (
            f"{who} cannot be read exactly at {_iso(self.at_us)}: {why}. Exact reads: any time "
            f"after {_iso(self.newest_us)}, or a multiple of {format_duration(self.hop_us)} "
            f"from {_iso(self.earliest_us)}"
        )

    def for_entity(self, entity: str, view: str | None = None) -> InexactReadError:
        """Name the entity (its Redis key) and the feature as ``view:feature``."""
        self.entity = entity
        if view and ":" not in self.feature:
            self.feature = f"{view}:{self.feature}"
        self.args = (self._message(),)
        return self

    def to_dict(self) -> dict:
        """The HTTP 422 body (``docs/serving.md``)."""
        return {
            "error": str(self), "entity": self.entity, "feature": self.feature,
            "at": _iso(self.at_us), "earliest_exact": _iso(self.earliest_us),
            "earliest_exact_ms": -(-self.earliest_us // 1000),
            "exact_after": _iso(self.newest_us), "hop_s": self.hop_us / 1e6,
        }


def earliest_exact(hop: HopLayout, span: int, top: int) -> int:
    """The earliest grid time whose window of ``span`` tiles the ring (newest tile ``top``)
    still holds: its oldest tile ``k - span`` must be newer than ``top - slots``."""
    return (top - hop.slots + 1 + span) * hop.hop


def past_last_tile(hop: HopLayout, span: int, feature: str, t: int, newest: int,
                   top: int) -> int:
    """For a read at ``t <= newest``: the newest tile to fold (``tile(t) - 1``), or
    ``InexactReadError`` when ``t`` is off the hop grid or the window's oldest tile is gone."""
    h = hop.hop
    kt = tile_of(t, h)
    pruned = kt - span <= top - hop.slots
    if t % h or pruned:
        raise InexactReadError(feature, t, newest, earliest_exact(hop, span, top), h, pruned)
    return kt - 1


def fold_feature(
    slot: FeatureSlot, tiles: dict[int, tuple[float, ...]], t: int, last: int | None = None
) -> float | int | None:
    """Value of one feature at ``t`` from the decoded ring of its hop, folding the tiles from
    the window's first up to ``last`` (default ``tile(t)``)."""
    agg = get_aggregation(slot.fn)
    hop = slot.hop.hop
    kt = tile_of(t, hop)
    lo = kt - slot.window // hop
    hi = kt if last is None else last
    acc = agg.empty()
    a, b = slot.start, slot.stop
    for idx in sorted(tiles):
        if lo <= idx <= hi:
            acc = agg.merge(acc, tiles[idx][a:b])
    return agg.finalize(acc)


def fold_view(
    slots: list[FeatureSlot],
    blobs: dict[str, bytes | None],
    t: int,
    exact: bool = True,
) -> tuple[list[float | int | None], list[bool], int | None]:
    """Values of ``slots`` at ``t`` from the raw ring blobs of one entity (field -> bytes).

    Returns (values, missing flags, newest event time seen by the view or None). A feature is
    missing when its ring is absent (entity never seen, or expired); its value is then the
    empty-window value (0 for count/sum, None otherwise). With ``exact`` (the default), a read
    at or before a ring's newest event is exact or raises ``InexactReadError`` (see the module
    docstring); ``exact=False`` folds up to ``tile(t)`` whatever the ring holds (reads at "now").
    """
    decoded: dict[str, tuple[int, dict[int, tuple[float, ...]]] | None] = {}
    last: dict[str, int | None] = {}
    newest: int | None = None
    values: list[float | int | None] = []
    missing: list[bool] = []
    for slot in slots:
        hl: HopLayout = slot.hop
        if hl.field not in decoded:
            blob = blobs.get(hl.field)
            d = decoded[hl.field] = hl.decode(blob) if blob else None
            last[hl.field] = None
            if d is not None:
                n = d[0]
                newest = n if newest is None else max(newest, n)
                if exact and t <= n:
                    mine = [s for s in slots if s.hop.field == hl.field]
                    widest = max(mine, key=lambda s: s.window)
                    top = max(d[1], default=EMPTY_TILE)
                    last[hl.field] = past_last_tile(
                        hl, widest.window // hl.hop, widest.name, t, n, top)
        d = decoded[hl.field]
        if d is None:
            agg = get_aggregation(slot.fn)
            values.append(agg.finalize(agg.empty()))
            missing.append(True)
        else:
            values.append(fold_feature(slot, d[1], t, last[hl.field]))
            missing.append(False)
    return values, missing, newest
