"""Erase one entity's events from the offline event log (``tessera forget``).

The rows of a source whose entity key columns equal the given key are removed from every
committed file of that source (``EventLog.remove_rows``: files rewritten, one atomic manifest
swap, the old files deleted at once). Training sets built afterwards read the new snapshot;
their fingerprint hashes the events they fold, so a training set over the entity changes its
fingerprint and a cache keyed by it is not reused, while one over other entities keeps it.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from features.definitions import EventSource
from features.errors import OfflineStoreError
from features.offline.event_log import EventLog, Removal


def key_filter(source: EventSource, values: tuple[str, ...]) -> Callable[[pa.Table], pa.Array]:
    """``drop(table)``: true where every entity key column of ``source`` equals ``values``
    (given as strings, read as the columns' types)."""
    keys = source.entity.keys
    if len(values) != len(keys):
        raise OfflineStoreError(f"source {source.name!r} is keyed by {list(keys)}; give "
                                f"{len(keys)} key value(s), not {len(values)}")

    def drop(table: pa.Table) -> pa.Array:
        mask = None
        for k, v in zip(keys, values, strict=True):
            col = table.column(k)
            try:
                value = pa.scalar(v).cast(col.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise OfflineStoreError(f"key {k!r} of source {source.name!r} is {col.type}; "
                                        f"{v!r} is not one ({e})") from None
            hit = pc.fill_null(pc.equal(col, value), False)
            mask = hit if mask is None else pc.and_(mask, hit)
        return mask

    return drop


def forget_events(log: EventLog, source: EventSource, values: tuple[str, ...]) -> Removal:
    """Remove the events of entity ``values`` from ``source``'s log; returns what went."""
    return log.remove_rows(source, key_filter(source, values))
