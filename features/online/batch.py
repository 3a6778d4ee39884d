"""Batch-view rows in the online store: field names, bytes, and the read-time TTL rule.

A materialized batch view (``features.online.materialize``) lives in the entity's own hash,
beside the windowed rings, so one ``HMGET`` serves a whole vector. One hash field per (view
version, feature): ``{view}@{version}:{feature}``, whose value carries the row's event time::

    b"<event time µs>:<value>"     the row has a value
    b"<event time µs>"              the row holds a null for this feature

Every field is self-contained (its own event time), so a read never pairs a value with another
row's time, and a write of one entity is one ``HSET`` (atomic, one key: fine on a cluster).

Reads apply the training set's as-of rule at the query time ``t``: the row counts when
``t - ts < ttl``; an expired row reads as null, as ``training_set()`` gives it. The store keeps
only the latest materialized row, so an exact read before that row's time (where the training
set would take an older row) raises ``BatchReadError`` instead of answering wrongly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from features.definitions import BatchFeatureView, Entity
from features.online.fold import InexactReadError


def feature_field(view: BatchFeatureView, feature: str) -> str:
    """The hash field of one batch feature (changes with the view's version)."""
    return f"{view.name}@{view.version}:{feature}"


def _bool(b: bytes) -> bool:
    return b == b"true"


# value bytes -> Python value, per declared type (timestamps are stored as epoch µs)
DECODERS: dict[str, Callable[[bytes], Any]] = {
    "int": int, "float": float, "bool": _bool, "timestamp": int,
    "string": lambda b: b.decode(),
}


class BatchReadError(InexactReadError):
    """An exact read before the materialized row's event time (HTTP 422 like any inexact read):
    the training set would take an older row, which the online store no longer holds."""

    def __init__(self, feature: str, at_us: int, row_us: int) -> None:
        super().__init__(feature, at_us, row_us, row_us, 1, False)

    def _message(self) -> str:
        from features.online.fold import _iso

        who = f"{self.feature} of {self.entity}" if self.entity else self.feature
        return (f"{who} cannot be read exactly at {_iso(self.at_us)}: the online store holds the "
                f"materialized row of {_iso(self.newest_us)} and no older one; read at or after "
                f"{_iso(self.newest_us)}")


class BatchFold:
    """Reads one batch feature field into the output columns ``cols`` (the same interface as
    ``features.online.fastfold.RingFold``: ``fold`` / ``fold_many`` return the row's time)."""

    def __init__(self, view: BatchFeatureView, feature: str, cols: list[int]) -> None:
        self.field = feature_field(view, feature)
        self.ref = f"{view.name}:{feature}"
        self.ttl = view.ttl
        self.decode = DECODERS[view.schema[feature]]
        self.cols = cols

    def fold(self, blob: bytes | None, t: int, vals: list, miss: list,
             exact: bool = True) -> int | None:
        if not blob:
            for c in self.cols:
                vals[c] = None
                miss[c] = True
            return None
        head, sep, body = blob.partition(b":")
        ts = int(head)
        if exact and ts > t:
            raise BatchReadError(self.ref, t, ts)
        value = self.decode(body) if sep and t - ts < self.ttl else None
        for c in self.cols:
            vals[c] = value
            miss[c] = value is None
        return ts

    def fold_many(self, blobs: list[bytes | None], t: int, vals: list[list], miss: list[list],
                  exact: bool = True) -> list[int | None]:
        out: list[int | None] = []
        for i, (b, v, m) in enumerate(zip(blobs, vals, miss, strict=True)):
            try:
                out.append(self.fold(b, t, v, m, exact))
            except InexactReadError as e:
                e.row = i
                raise
        return out


def add_batch_reads(plan: Any, batch: list[tuple[int, BatchFeatureView, str]],
                    make_entity_plan: Callable[[Entity, list, list], Any]) -> None:
    """Add the batch features ``(output column, view, feature)`` of a ``ReadPlan`` to its
    entity plans: one more field (and fold) per feature in the entity's hash."""
    for col, view, fname in batch:
        ep = plan.by_entity.get(view.entity.name)
        if ep is None:
            ep = plan.by_entity[view.entity.name] = make_entity_plan(view.entity, [], [])
        fld = feature_field(view, fname)
        if fld in ep.fields:
            ep.rings[ep.fields.index(fld)].cols.append(col)
        else:
            ep.fields.append(fld)
            ep.rings.append(BatchFold(view, fname, [col]))
            ep.ring_views.append(view.name)
        if view.name not in plan.views:
            plan.views.append(view.name)
