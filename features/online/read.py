"""Online feature reads: one Redis round trip per call, tiles folded at the query time.

Query times: ``at`` is parsed by ``parse_at`` -- an ISO-8601 string (naive = UTC), a number of
epoch **milliseconds** (as events on the wire, ``features.event_schema``), a ``datetime``, or
None for now -- the same in the Python API, the HTTP API and the CLI. Code that already holds
exact µs passes ``at_us=`` instead. A read with a time is exact or raises
``InexactReadError`` (``features.online.fold``); a read at now folds whatever is applied.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from features.definitions import Entity, FeatureRepo, FeatureView
from features.errors import SchemaError
from features.event_schema import parse_timestamp
from features.online.backend import open_backend
from features.online.batch import add_batch_reads
from features.online.fastfold import RingFold
from features.online.fold import InexactReadError
from features.online.layout import FeatureSlot, ViewLayout, entity_key

At = datetime | str | int | float | None
# Epoch ms beyond year 5138: a µs (or ns) time passed where ms are expected -- refuse it
# rather than read ~1000x in the future
_MAX_MS = 10**14


def parse_at(at: At, name: str = "at") -> int:
    """Query time in µs from an ISO-8601 string (naive = UTC), epoch milliseconds (a number or
    a string of digits), a ``datetime``, or None (now). ``ValueError`` says what to send."""
    if at is None:
        return time.time_ns() // 1000
    if type(at) is bool:
        raise ValueError(f"{name} must be an ISO-8601 string or epoch milliseconds, got {at!r}")
    if isinstance(at, str):
        s = at.strip()
        try:
            at = float(s) if any(c in s for c in ".eE") else int(s)
        except ValueError:
            at = s
    if isinstance(at, (int, float)) and not abs(at) < _MAX_MS:
        raise ValueError(
            f"{name}={at!r} is not epoch milliseconds (it would be after the year 5000): send "
            "epoch ms or an ISO-8601 string; in Python, exact µs go in at_us="
        )
    try:
        return parse_timestamp(at, name)
    except SchemaError as e:
        raise ValueError(str(e)) from None


@dataclass
class OnlineResult:
    """Values in request order: ``values[i][j]`` is feature ``j`` of entity row ``i``."""

    features: list[str]
    values: list[list[Any]]
    missing: list[list[bool]]
    freshness_s: list[dict[str, float | None]] = field(default_factory=list)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.features, row, strict=True)) for row in self.values]


@dataclass
class _EntityPlan:
    entity: Entity
    fields: list[str]
    # (output column, view name, slot) for every requested feature of this entity
    slots: list[tuple[int, str, FeatureSlot]]
    # one compiled fold per hash field, in ``fields`` order, and the view each field belongs to
    rings: list[RingFold] = field(default_factory=list)
    ring_views: list[str] = field(default_factory=list)

    def key(self, row: dict[str, Any]) -> str:
        """The Redis key of ``row``'s entity (ValueError naming the missing key column)."""
        try:
            vals = [row[k] for k in self.entity.keys]
        except KeyError as e:
            raise ValueError(
                f"entity row {row!r} lacks key {e.args[0]!r} of entity "
                f"{self.entity.name!r} (needs {list(self.entity.keys)})"
            ) from None
        return entity_key(self.entity, vals)

    def compile(self) -> None:
        by_field: dict[str, list[tuple[int, FeatureSlot]]] = {}
        view_of: dict[str, str] = {}
        for col, vname, slot in self.slots:
            by_field.setdefault(slot.hop.field, []).append((col, slot))
            view_of[slot.hop.field] = vname
        self.rings = [RingFold(by_field[f][0][1].hop, by_field[f]) for f in self.fields]
        self.ring_views = [view_of[f] for f in self.fields]


class ReadPlan:
    """What to fetch for a list of feature refs; built once per distinct request shape."""

    def __init__(self, repo: FeatureRepo, refs: list[str]) -> None:
        self.refs = list(refs)
        self.by_entity: dict[str, _EntityPlan] = {}
        self.views: list[str] = []
        batch = []  # materialized batch views: fields of the same hashes (features.online.batch)
        for col, (view, fname) in enumerate(repo.resolve(refs)):
            if not isinstance(view, FeatureView):
                batch.append((col, view, fname))
                continue
            layout = _layout(view)
            slot = layout.features[fname]
            plan = self.by_entity.setdefault(
                view.entity.name, _EntityPlan(view.entity, [], [])
            )
            if slot.hop.field not in plan.fields:
                plan.fields.append(slot.hop.field)
            plan.slots.append((col, view.name, slot))
            if view.name not in self.views:
                self.views.append(view.name)
        for ep in self.by_entity.values():
            ep.compile()
        add_batch_reads(self, batch, _EntityPlan)
        self.single = next(iter(self.by_entity.values())) if len(self.by_entity) == 1 else None

    @property
    def entity_keys(self) -> list[str]:
        return [k for p in self.by_entity.values() for k in p.entity.keys]


_LAYOUTS: dict[tuple[str, str], ViewLayout] = {}


def _layout(view: FeatureView) -> ViewLayout:
    key = (view.name, view.version)
    lay = _LAYOUTS.get(key)
    if lay is None:
        lay = _LAYOUTS[key] = ViewLayout(view)
    return lay


class OnlineStore:
    """Reads windowed features from Redis (the stream worker writes them)."""

    def __init__(
        self, client: Any, repo: FeatureRepo, max_entities: int = 1000, spin_us: float = 200.0,
        max_plans: int = 1024,
    ) -> None:
        """``spin_us``: how long to busy-poll for Redis' reply before sleeping on it
        (``features.online.hmget``); 0 never polls. ``max_plans``: read plans kept (one per
        distinct feature list, least recently used evicted), so callers sending ever new lists
        cannot grow memory without bound."""
        self.client = client
        self.repo = repo
        # the online store's backend; its read path (``HashReads``) is called directly here
        self.backend = open_backend(client, spin_us=spin_us)
        self.reads = self.backend.reads
        self.max_entities = max_entities
        self.max_plans = max_plans
        self._plans: OrderedDict[tuple[str, ...], ReadPlan] = OrderedDict()

    def plan(self, refs: list[str]) -> ReadPlan:
        key = tuple(refs)
        plans = self._plans
        p = plans.get(key)
        if p is None:
            p = plans[key] = ReadPlan(self.repo, refs)
            while len(plans) > self.max_plans:
                try:
                    plans.popitem(last=False)
                except KeyError:  # another thread emptied it meanwhile
                    break
        else:
            try:
                plans.move_to_end(key)
            except KeyError:  # evicted by another thread meanwhile
                pass
        return p

    def get_features(
        self,
        features: list[str],
        entities: list[dict[str, Any]],
        at: At = None,
        *,
        at_us: int | None = None,
    ) -> OnlineResult:
        """Feature values for each entity row at ``at`` (default now; see ``parse_at``) or at
        ``at_us`` (exact µs), with missing flags and the age in seconds of the newest event each
        view has seen for that entity.

        A read at a given time is exact or raises ``InexactReadError`` naming the entity, the
        feature and the earliest exact time (``features.online.fold``); a read at now counts
        every applied event (also events stamped ahead of this clock)."""
        if len(entities) > self.max_entities:
            raise ValueError(
                f"{len(entities)} entities in one call; the limit is {self.max_entities}"
            )
        plan = self.plan(features)
        if at_us is not None:
            if at is not None:
                raise ValueError("give at= or at_us=, not both")
            t, exact = int(at_us), True
        else:
            t, exact = parse_at(at), at is not None
        if len(entities) == 1 and plan.single is not None:
            return self._get_one(plan, plan.single, entities[0], t, exact)
        keys: list[tuple[str, list[str]]] = []
        for row in entities:
            for ep in plan.by_entity.values():
                keys.append((ep.key(row), ep.fields))
        replies = self.reads.fetch(keys)
        n, m = len(plan.refs), len(plan.by_entity)
        out_vals: list[list[Any]] = [[None] * n for _ in entities]
        out_missing: list[list[bool]] = [[True] * n for _ in entities]
        fresh: list[dict[str, float | None]] = [dict.fromkeys(plan.views) for _ in entities]
        for e, ep in enumerate(plan.by_entity.values()):
            mine = replies[e::m]  # this entity plan's reply for every row, in row order
            for r, (ring, vname) in enumerate(zip(ep.rings, ep.ring_views, strict=True)):
                try:
                    newest = ring.fold_many([rep[r] for rep in mine], t, out_vals, out_missing,
                                            exact)
                except InexactReadError as err:
                    raise err.for_entity(keys[err.row * m + e][0], vname) from None
                for ages, ts in zip(fresh, newest, strict=True):
                    if ts is not None:
                        age = (t - ts) / 1e6
                        old = ages[vname]
                        ages[vname] = age if old is None else min(old, age)
        return OnlineResult(list(plan.refs), out_vals, out_missing, fresh)

    def _get_one(
        self, plan: ReadPlan, ep: _EntityPlan, row: dict[str, Any], t: int, exact: bool
    ) -> OnlineResult:
        """``get_features`` for one entity row: the same values without the batch
        bookkeeping (per-row reply slicing, ``fold_many``), which is most of a one-entity call's
        Python time."""
        key = ep.key(row)
        blobs = self.reads.fetch([(key, ep.fields)])[0]
        n = len(plan.refs)
        out: list[Any] = [None] * n
        missing = [True] * n
        newest: dict[str, int] = {}
        try:
            for ring, vname, blob in zip(ep.rings, ep.ring_views, blobs, strict=True):
                ts = ring.fold(blob, t, out, missing, exact)
                if ts is not None and (vname not in newest or ts > newest[vname]):
                    newest[vname] = ts
        except InexactReadError as err:
            raise err.for_entity(key, vname) from None
        fresh: dict[str, float | None] = dict.fromkeys(plan.views)
        for vname, ts in newest.items():
            fresh[vname] = (t - ts) / 1e6
        return OnlineResult(list(plan.refs), [out], [missing], [fresh])
