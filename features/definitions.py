"""Declarative feature definitions: the single source both executions (stream and batch) read.

A feature repo is a Python module that builds these objects; ``tessera apply`` validates them
and records each view under a content hash, so a changed definition is a new version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from features.errors import DefinitionError
from features.semantics.aggregations import Aggregation, get_aggregation
from features.semantics.windows import (
    check_hop,
    default_hop,
    format_duration,
    parse_duration,
)

FIELD_TYPES = ("string", "int", "float", "bool", "timestamp")
_TYPE_ALIASES = {"str": "string", "integer": "int", "double": "float", "boolean": "bool"}


def _norm_type(name: str, where: str) -> str:
    t = _TYPE_ALIASES.get(name, name)
    if t not in FIELD_TYPES:
        raise DefinitionError(
            f"{where}: unknown type {name!r}; use one of {', '.join(FIELD_TYPES)}"
        )
    return t


def _check_name(name: str, what: str) -> None:
    if not name or not name.replace("_", "").replace("-", "").isalnum() or ":" in name:
        raise DefinitionError(
            f"{what} name {name!r} must be non-empty letters, digits, '_' or '-' (no ':')"
        )


def _check_tags(tags: dict[str, str] | None, view: str) -> dict[str, str]:
    tags = dict(tags or {})
    for k, v in tags.items():
        if type(k) is not str or type(v) is not str:
            raise DefinitionError(f"view {view!r}: tags must map strings to strings, got "
                                  f"{k!r}: {v!r}")
    return tags


def _digest(payload: object) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Entity:
    """What features describe (a user, a card, a (user, merchant) pair): a name and key columns."""

    name: str
    keys: tuple[str, ...]
    description: str = ""

    def __init__(self, name: str, keys: list[str] | tuple[str, ...] | str, description: str = ""):
        _check_name(name, "entity")
        keys = (keys,) if isinstance(keys, str) else tuple(keys)
        if not keys:
            raise DefinitionError(f"entity {name!r} needs at least one key column")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "description", description)

    def spec(self) -> dict:
        return {"name": self.name, "keys": list(self.keys)}


DEFAULT_MAX_FUTURE = "1m"


@dataclass(frozen=True)
class EventSource:
    """A Kafka topic of events: its schema, event-time field and the entity it is keyed by.

    Producers and stream workers validate events against ``schema``; the offline event log
    stores them with the same column names and types. Events are partitioned by the entity key,
    so every event of one entity lands in one partition (the worker relies on it).
    """

    name: str
    topic: str
    schema: dict[str, str]
    timestamp_field: str
    entity: Entity
    partitions: int = 4
    description: str = ""
    # events stamped more than this ahead of the clock that receives them are dead-lettered
    # (reason future_timestamp) online and left out of training sets: a device with a wrong
    # clock must not move every window of its entity into the future
    max_future: str = DEFAULT_MAX_FUTURE

    def __init__(
        self,
        name: str,
        schema: dict[str, str],
        timestamp_field: str,
        entity: Entity,
        topic: str | None = None,
        partitions: int = 4,
        description: str = "",
        max_future: str = DEFAULT_MAX_FUTURE,
    ):
        _check_name(name, "source")
        norm = {k: _norm_type(v, f"source {name!r} field {k!r}") for k, v in schema.items()}
        if norm.get(timestamp_field) != "timestamp":
            raise DefinitionError(
                f"source {name!r}: timestamp_field {timestamp_field!r} must be a schema field of "
                "type 'timestamp'"
            )
        for k in entity.keys:
            if k not in norm:
                raise DefinitionError(
                    f"source {name!r}: entity key {k!r} of entity {entity.name!r} is not in the "
                    f"schema; add it (fields: {', '.join(norm)})"
                )
        if partitions < 1:
            raise DefinitionError(f"source {name!r}: partitions must be >= 1")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "topic", topic or name)
        object.__setattr__(self, "schema", norm)
        object.__setattr__(self, "timestamp_field", timestamp_field)
        object.__setattr__(self, "entity", entity)
        object.__setattr__(self, "partitions", partitions)
        object.__setattr__(self, "description", description)
        try:
            parse_duration(max_future)
        except ValueError as e:
            raise DefinitionError(f"source {name!r}: max_future: {e}") from None
        object.__setattr__(self, "max_future", max_future)

    @property
    def max_future_us(self) -> int:
        return parse_duration(self.max_future)

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def repartition_topic(self) -> str:
        """Where events that arrived off their entity's home partition are forwarded."""
        return f"{self.topic}.repartition"

    def spec(self) -> dict:
        return {
            "name": self.name,
            "topic": self.topic,
            "schema": self.schema,
            "timestamp_field": self.timestamp_field,
            "entity": self.entity.spec(),
            # only when set: versions of definitions made before the rule existed stay the same
            **({"max_future": self.max_future} if self.max_future != DEFAULT_MAX_FUTURE else {}),
        }


@dataclass(frozen=True)
class Aggregate:
    """One aggregation of a field over one or more windows, e.g. ``sum(amount)`` over 1h and 7d.

    ``name`` overrides the generated feature names; it may contain ``{window}`` (and must when
    there are several windows). Generated names: ``{field}_{fn}_{window}``, or ``count_{window}``.
    """

    fn: str
    windows: tuple[str, ...]
    field: str | None = None
    hop: str | None = None
    name: str | None = None

    def __init__(
        self,
        fn: str,
        windows: list[str] | tuple[str, ...] | str,
        field: str | None = None,
        hop: str | None = None,
        name: str | None = None,
    ):
        agg = get_aggregation(fn)
        windows = (windows,) if isinstance(windows, str) else tuple(windows)
        if not windows:
            raise DefinitionError(f"aggregation {fn!r} needs at least one window")
        if agg.needs_field and not field:
            raise DefinitionError(f"aggregation {fn!r} needs field=...")
        if name and len(windows) > 1 and "{window}" not in name:
            raise DefinitionError(
                f"name {name!r} covers {len(windows)} windows; put '{{window}}' in it"
            )
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "windows", windows)
        object.__setattr__(self, "field", field if agg.needs_field else field)
        object.__setattr__(self, "hop", hop)
        object.__setattr__(self, "name", name)


@dataclass(frozen=True)
class WindowedFeature:
    """One output column: aggregation ``fn`` of ``field`` over ``window`` tiled by ``hop`` (µs)."""

    name: str
    fn: str
    field: str | None
    window: int
    hop: int

    @property
    def aggregation(self) -> Aggregation:
        return get_aggregation(self.fn)

    def spec(self) -> dict:
        return {"name": self.name, "fn": self.fn, "field": self.field,
                "window": self.window, "hop": self.hop}


@dataclass(frozen=True)
class FeatureView:
    """Windowed aggregations over an EventSource, keyed by the source's entity."""

    name: str
    source: EventSource
    features: tuple[WindowedFeature, ...]
    description: str = ""
    # catalog metadata, like description: not in spec(), so never in the version
    tags: dict[str, str] = field(default_factory=dict, hash=False)

    def __init__(
        self,
        name: str,
        source: EventSource,
        aggregations: list[Aggregate],
        entity: Entity | None = None,
        description: str = "",
        tags: dict[str, str] | None = None,
    ):
        _check_name(name, "feature view")
        if entity is not None and entity != source.entity:
            raise DefinitionError(
                f"view {name!r}: entity {entity.name!r} differs from source {source.name!r}'s "
                f"entity {source.entity.name!r}. Events are partitioned by the source entity, so a "
                "view must aggregate by it; publish a source keyed by the other entity instead."
            )
        if not aggregations:
            raise DefinitionError(f"view {name!r} needs at least one aggregation")
        feats: list[WindowedFeature] = []
        for a in aggregations:
            if a.field is not None:
                t = source.schema.get(a.field)
                if t is None:
                    raise DefinitionError(
                        f"view {name!r}: field {a.field!r} is not in source {source.name!r} "
                        f"(fields: {', '.join(source.schema)})"
                    )
                if t not in ("int", "float", "bool") and get_aggregation(a.fn).needs_field:
                    raise DefinitionError(
                        f"view {name!r}: {a.fn}({a.field}) needs a numeric field, "
                        f"{a.field!r} is {t}"
                    )
            for w in a.windows:
                window = parse_duration(w)
                hop = parse_duration(a.hop) if a.hop else default_hop(window)
                check_hop(window, hop)
                label = w.replace(" ", "") if isinstance(w, str) else format_duration(window)
                if a.name:
                    fname = a.name.replace("{window}", label)
                elif a.field and get_aggregation(a.fn).needs_field:
                    fname = f"{a.field}_{a.fn}_{label}"
                else:
                    fname = f"{a.fn}_{label}"
                feats.append(WindowedFeature(fname, a.fn, a.field, window, hop))
        names = [f.name for f in feats]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DefinitionError(f"view {name!r}: duplicate feature names {dupes}; set name=")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "features", tuple(feats))
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "tags", _check_tags(tags, name))

    @property
    def entity(self) -> Entity:
        return self.source.entity

    @property
    def max_window(self) -> int:
        return max(f.window for f in self.features)

    def feature(self, name: str) -> WindowedFeature:
        for f in self.features:
            if f.name == name:
                return f
        from features.errors import UnknownFeatureError

        raise UnknownFeatureError(
            f"view {self.name!r} has no feature {name!r}; it has {', '.join(self.feature_names)}"
        )

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def hops(self) -> dict[int, list[WindowedFeature]]:
        """Features grouped by hop, in definition order: one tile stream per hop."""
        out: dict[int, list[WindowedFeature]] = {}
        for f in self.features:
            out.setdefault(f.hop, []).append(f)
        return out

    def spec(self) -> dict:
        return {
            "kind": "windowed",
            "name": self.name,
            "source": self.source.spec(),
            "features": [f.spec() for f in self.features],
        }

    @property
    def version(self) -> str:
        """Content hash of everything that changes the values this view computes."""
        return _digest(self.spec())


@dataclass(frozen=True)
class BatchFeatureView:
    """Precomputed feature columns in Parquet (as Feast users have), joined point-in-time.

    The value at ``t`` is the row of the entity with the greatest ``timestamp_field <= t``,
    provided ``t - timestamp < ttl``; otherwise null.
    """

    name: str
    entity: Entity
    path: str
    timestamp_field: str
    schema: dict[str, str]
    ttl: int
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict, hash=False)  # not in the version

    def __init__(
        self,
        name: str,
        entity: Entity,
        path: str,
        timestamp_field: str,
        schema: dict[str, str],
        ttl: str | int | timedelta,
        description: str = "",
        tags: dict[str, str] | None = None,
    ):
        _check_name(name, "batch feature view")
        norm = {k: _norm_type(v, f"batch view {name!r} field {k!r}") for k, v in schema.items()}
        for k in entity.keys:
            norm.pop(k, None)
        norm.pop(timestamp_field, None)
        if not norm:
            raise DefinitionError(f"batch view {name!r} declares no feature columns in schema")
        if isinstance(ttl, timedelta):
            ttl_us = int(ttl.total_seconds() * 1_000_000)
        else:
            ttl_us = parse_duration(ttl)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "entity", entity)
        object.__setattr__(self, "path", str(path))
        object.__setattr__(self, "timestamp_field", timestamp_field)
        object.__setattr__(self, "schema", norm)
        object.__setattr__(self, "ttl", ttl_us)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "tags", _check_tags(tags, name))

    @property
    def feature_names(self) -> list[str]:
        return list(self.schema)

    def spec(self) -> dict:
        return {
            "kind": "batch",
            "name": self.name,
            "entity": self.entity.spec(),
            "path": self.path,
            "timestamp_field": self.timestamp_field,
            "schema": self.schema,
            "ttl": self.ttl,
        }

    @property
    def version(self) -> str:
        return _digest(self.spec())


AnyView = FeatureView | BatchFeatureView


def parse_ref(ref: str) -> tuple[str, str]:
    """Split ``view:feature``; raise with an example when malformed."""
    view, sep, feat = ref.partition(":")
    if not sep or not view or not feat or ":" in feat:
        from features.errors import UnknownFeatureError

        raise UnknownFeatureError(
            f"bad feature reference {ref!r}; write 'view:feature', e.g. 'user_txn:amount_sum_1h'"
        )
    return view, feat


@dataclass
class FeatureRepo:
    """The set of definitions found in a repo module, indexed by name."""

    entities: dict[str, Entity] = field(default_factory=dict)
    sources: dict[str, EventSource] = field(default_factory=dict)
    views: dict[str, AnyView] = field(default_factory=dict)
    # request-time feature views (features.request): computed per request, not stored
    requests: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, objects: list[object]) -> FeatureRepo:
        from features.request import RequestFeatureView

        repo = cls()
        for obj in objects:
            if isinstance(obj, RequestFeatureView):
                repo._put(repo.requests, obj.name, obj, "request feature view")
            if isinstance(obj, Entity):
                repo._put(repo.entities, obj.name, obj, "entity")
            elif isinstance(obj, EventSource):
                repo._put(repo.sources, obj.name, obj, "source")
                repo._put(repo.entities, obj.entity.name, obj.entity, "entity")
            elif isinstance(obj, FeatureView):
                repo._put(repo.views, obj.name, obj, "view")
                repo._put(repo.sources, obj.source.name, obj.source, "source")
                repo._put(repo.entities, obj.entity.name, obj.entity, "entity")
            elif isinstance(obj, BatchFeatureView):
                repo._put(repo.views, obj.name, obj, "view")
                repo._put(repo.entities, obj.entity.name, obj.entity, "entity")
        both = sorted(set(repo.views) & set(repo.requests))
        if both:
            raise DefinitionError(f"{both} name both a feature view and a request feature view")
        return repo

    @staticmethod
    def _put(table: dict, name: str, obj: object, what: str) -> None:
        old = table.get(name)
        if old is not None and old != obj:
            raise DefinitionError(f"two different {what} definitions are named {name!r}")
        table[name] = obj

    def view(self, name: str) -> AnyView:
        try:
            return self.views[name]
        except KeyError:
            from features.errors import UnknownFeatureError

            raise UnknownFeatureError(
                f"no feature view {name!r}; known views: {', '.join(sorted(self.views)) or 'none'}"
            ) from None

    def resolve(self, refs: list[str]) -> list[tuple[AnyView, str]]:
        """Check every ``view:feature`` reference exists; return (view, feature) pairs."""
        out = []
        for ref in refs:
            vname, fname = parse_ref(ref)
            view = self.view(vname)
            if fname not in view.feature_names:
                from features.errors import UnknownFeatureError

                raise UnknownFeatureError(
                    f"view {vname!r} has no feature {fname!r}; it has "
                    f"{', '.join(view.feature_names)}"
                )
            out.append((view, fname))
        return out
