"""Read-time folding: turn stored tile rings into feature values at a query time.

This is where windows expire: nothing is precomputed per window, so a read at a later ``t``
simply folds a later range of tiles, whether or not new events arrived.
"""

from __future__ import annotations

from features.online.layout import FeatureSlot, HopLayout
from features.semantics.aggregations import get_aggregation
from features.semantics.windows import tile_of


def fold_feature(
    slot: FeatureSlot, tiles: dict[int, tuple[float, ...]], t: int
) -> float | int | None:
    """Value of one feature at ``t`` from the decoded ring of its hop."""
    agg = get_aggregation(slot.fn)
    hop = slot.hop.hop
    kt = tile_of(t, hop)
    lo = kt - slot.window // hop
    acc = agg.empty()
    a, b = slot.start, slot.stop
    for idx in sorted(tiles):
        if lo <= idx <= kt:
            acc = agg.merge(acc, tiles[idx][a:b])
    return agg.finalize(acc)


def fold_view(
    slots: list[FeatureSlot],
    blobs: dict[str, bytes | None],
    t: int,
) -> tuple[list[float | int | None], list[bool], int | None]:
    """Values of ``slots`` at ``t`` from the raw ring blobs of one entity (field -> bytes).

    Returns (values, missing flags, newest event time seen by the view or None). A feature is
    missing when its ring is absent (entity never seen, or expired); its value is then the
    empty-window value (0 for count/sum, None otherwise).
    """
    decoded: dict[str, tuple[int, dict[int, tuple[float, ...]]] | None] = {}
    newest: int | None = None
    values: list[float | int | None] = []
    missing: list[bool] = []
    for slot in slots:
        hl: HopLayout = slot.hop
        if hl.field not in decoded:
            blob = blobs.get(hl.field)
            decoded[hl.field] = hl.decode(blob) if blob else None
            if decoded[hl.field] is not None:
                n = decoded[hl.field][0]
                newest = n if newest is None else max(newest, n)
        d = decoded[hl.field]
        if d is None:
            agg = get_aggregation(slot.fn)
            values.append(agg.finalize(agg.empty()))
            missing.append(True)
        else:
            values.append(fold_feature(slot, d[1], t))
            missing.append(False)
    return values, missing, newest
