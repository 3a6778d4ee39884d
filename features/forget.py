"""Forget one entity everywhere Tessera keeps it (``tessera forget``, ``POST /v1/admin/forget``).

What is erased: the entity's online hash (``tessera:{entity}:{key}``: every view's rings and
batch features, one ``DEL``, routed to its node on a Redis Cluster) and its events in the
offline event log of every source keyed by that entity (``features.offline.forget``).

What is not, and must be handled where it lives (the report says so): the events still in the
source's Kafka topic and its dead-letter topic until their retention expires, and the Parquet
files of batch views, which are the user's own (remove the rows there, then materialize
again, or the next ``tessera materialize`` writes the entity back). The serving side erases
its prediction and outcome logs itself (``serving.experiments.forget``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis

from features.definitions import BatchFeatureView, Entity, EventSource, FeatureRepo
from features.errors import TesseraError
from features.offline.event_log import EventLog, Removal
from features.offline.forget import forget_events
from features.online.layout import entity_key


class ForgetError(TesseraError):
    """A forget request that names no entity, or more than one, or unknown views/sources."""


def parse_key(text: str) -> tuple[str, ...]:
    """``u1`` -> ("u1",); a composite key as a JSON list, ``["u1", "m7"]`` -> ("u1", "m7")."""
    text = text.strip()
    if text.startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ForgetError(f"entity key {text!r} starts with '[' but is not a JSON list "
                              f"({e}); write a composite key as '[\"u1\", \"m7\"]'") from None
        if not values or not all(isinstance(v, str | int) for v in values):
            raise ForgetError(f"entity key {text!r}: a composite key is a non-empty JSON list "
                              "of strings or numbers")
        return tuple(str(v) for v in values)
    if not text:
        raise ForgetError("the entity key is empty; give the key value, e.g. --entity u1")
    return (text,)


@dataclass
class ForgetPlan:
    """Which entity, its key, the sources whose logs hold its events and the views it has."""

    entity: Entity
    values: tuple[str, ...]
    sources: list[EventSource]
    batch_views: list[str] = field(default_factory=list)

    @property
    def online_key(self) -> str:
        return entity_key(self.entity, self.values)


def plan(repo: FeatureRepo, values: tuple[str, ...], entity: str | None = None,
         sources: list[str] | tuple[str, ...] = (), views: list[str] | tuple[str, ...] = ()
         ) -> ForgetPlan:
    """Resolve what to erase. ``entity`` names the entity (needed when several have as many
    key columns as ``values``); ``sources``/``views`` restrict the offline part to those."""
    unknown = [s for s in sources if s not in repo.sources] + [v for v in views
                                                              if v not in repo.views]
    if unknown:
        raise ForgetError(f"unknown sources/views {unknown}; the repo has sources "
                          f"{sorted(repo.sources)} and views {sorted(repo.views)}")
    picked = [repo.sources[s] for s in sources]
    picked_views = [repo.views[v] for v in views]
    candidates = {e.name: e for e in [*(s.entity for s in picked),
                                      *(v.entity for v in picked_views)]}
    if entity is not None:
        if entity not in repo.entities:
            raise ForgetError(f"no entity {entity!r}; entities: {sorted(repo.entities)}")
        candidates = {entity: repo.entities[entity]}
    elif not candidates:
        candidates = {n: e for n, e in repo.entities.items() if len(e.keys) == len(values)}
    if len(candidates) != 1:
        raise ForgetError(
            f"the key {list(values)} fits entities {sorted(candidates) or 'none'}; name one "
            "with --entity-name (or --source/--view of one entity)")
    (ent,) = candidates.values()
    if len(ent.keys) != len(values):
        raise ForgetError(f"entity {ent.name!r} is keyed by {list(ent.keys)}; give "
                          f"{len(ent.keys)} key value(s) (a JSON list), not {len(values)}")
    wrong = [x.name for x in [*picked, *picked_views] if x.entity.name != ent.name]
    if wrong:
        raise ForgetError(f"{wrong} are not keyed by entity {ent.name!r}")
    if not sources and not views:
        picked = [s for s in repo.sources.values() if s.entity.name == ent.name]
        picked_views = [v for v in repo.views.values() if v.entity.name == ent.name]
    for v in picked_views:
        src = getattr(v, "source", None)
        if isinstance(src, EventSource) and src not in picked:
            picked.append(src)
    batch = [v.name for v in picked_views if isinstance(v, BatchFeatureView)]
    return ForgetPlan(ent, values, sorted(picked, key=lambda s: s.name), batch)


@dataclass
class ForgetReport:
    """What ``forget`` erased, and what it could not."""

    entity: str
    key: list[str]
    online_keys: int
    offline: dict[str, Removal]
    not_erased: list[str] = field(default_factory=list)
    complete: bool = True  # False: a store failed; running the same forget again finishes it

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.offline.values())

    def to_dict(self) -> dict[str, Any]:
        return {"entity": self.entity, "key": self.key, "online_keys": self.online_keys,
                "offline_rows": self.rows,
                "sources": {s: {"rows": r.rows, "files": r.files,
                                "retired_deleted": r.retired_deleted,
                                "generation": r.generation} for s, r in self.offline.items()},
                "not_erased": self.not_erased, "complete": self.complete}


def forget(p: ForgetPlan, event_log: EventLog, redis_client: Any | None) -> ForgetReport:
    """Erase the planned entity: its online hash (when a client is given) and its events in
    each planned source's log. Offline first: if Redis is down the log is clean already, and
    running the same forget again finishes the job (both steps are idempotent)."""
    offline = {s.name: forget_events(event_log, s, p.values) for s in p.sources}
    not_erased = [f"events still in Kafka topics {', '.join(s.topic for s in p.sources)} and "
                  "their dead-letter topics until their retention expires"] if p.sources else []
    online, failed = 0, False
    try:
        online = 0 if redis_client is None else int(redis_client.delete(p.online_key))
    except redis.RedisError as e:
        failed = True
        not_erased.append(f"the online hash {p.online_key}: Redis failed ({type(e).__name__}: "
                          f"{e}); run the same forget again")
    if p.batch_views:
        not_erased.append(f"rows in the Parquet files of batch views {', '.join(p.batch_views)}"
                          " (yours: remove them there before the next materialize)")
    if redis_client is None:
        not_erased.append(f"the online hash {p.online_key} (no Redis configured)")
    return ForgetReport(p.entity.name, list(p.values), online, offline, not_erased,
                        complete=not failed)
