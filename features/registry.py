"""The registry: every applied feature view's spec, stored under its content hash.

``views/<name>/<version>.json`` holds one version (written once and never rewritten, so models
trained on an old version can still rebuild it) and ``current.json`` says which version of each
view the last ``apply`` made current, with the views' catalog metadata (description and tags,
which are not part of the version, so a later ``apply`` may change them without a new version).
Specs are plain JSON; ``load_repo`` rebuilds the definition objects from them, and the rebuilt
views have the same ``.version``. ``plan`` compares a repo with the current registry before
``apply`` (new / changed / removed views, as ``feast plan`` does); ``describe`` is a view's
catalog entry.

Where: ``Settings.registry_location``, a folder (``<home>/registry``) or an object store
(``registry_uri: s3://bucket/prefix``), through ``features.offline.storage.Store`` like the event
log and the model registry. ``current.json`` is the one object an ``apply`` commits, with the
store's conditional put (``If-Match`` on its ETag on S3; compare-and-swap under an ``flock`` on a
disk), after the version files it names exist. A plan remembers the version of ``current.json``
it was computed against, and ``apply(..., plan=...)`` commits only onto that version: when
another ``apply`` committed in between, it raises ``RegistryConflict`` and changes nothing, as
Terraform refuses a stale saved plan. It does not retry: an apply makes the repo's views the
whole registry, so redoing it on the newer registry would silently remove what the other one
added, and the plan the user (and the served-model check) saw would not be the one applied.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from features.definitions import (
    DEFAULT_MAX_FUTURE,
    Aggregate,
    AnyView,
    BatchFeatureView,
    Entity,
    EventSource,
    FeatureRepo,
    FeatureView,
)
from features.errors import DefinitionError, RegistryError
from features.offline.storage import StorageError, Store
from features.request import RequestFeatureView
from features.settings import Settings

CURRENT = "current.json"


class RegistryConflict(RegistryError):
    """Another ``apply`` committed between this one's read of the registry and its commit."""


def registry_store(settings: Settings) -> Store:
    """The feature registry's files: ``settings.registry_location`` (a folder or a URI)."""
    try:
        return Store(settings.registry_location)
    except StorageError as e:
        raise RegistryError(f"cannot open the feature registry: {e}; set registry_uri (or "
                            "TESSERA_REGISTRY_URI) to a folder or an s3:// URI") from e


def has_registry(settings: Settings) -> bool:
    """Whether an ``apply`` was ever committed to the settings' registry."""
    return registry_store(settings).exists(CURRENT)


@dataclass(frozen=True)
class _Current:
    """``current.json`` as read, with the storage version a commit must find unchanged."""

    views: dict[str, str]  # name -> version
    metadata: dict[str, dict]  # name -> {"description", "tags"}; absent in old registries
    generation: int  # commits so far (0: none; old registries count from their next)
    version: str | None  # ETag on S3, content hash on a disk; None: nothing applied yet


def _read_current(store: Store) -> _Current:
    data, version = store.read_versioned(CURRENT)
    if data is None:
        return _Current({}, {}, 0, None)
    try:
        doc = json.loads(data)
        return _Current(dict(doc["views"]), dict(doc.get("metadata", {})),
                        int(doc.get("generation", 0)), version)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise RegistryError(f"registry file {store.uri}/{CURRENT} is corrupt ({e!r}); "
                            "re-run `tessera apply`") from e


def _require_current(store: Store) -> _Current:
    current = _read_current(store)
    if current.version is None:
        raise RegistryError(f"registry file {store.uri}/{CURRENT} is missing; run "
                            "`tessera apply --repo PATH` first")
    return current


def _view_rel(name: str, version: str) -> str:
    return f"views/{name}/{version}.json"


def _dumps(payload: dict) -> bytes:
    return json.dumps(payload, indent=2, sort_keys=True).encode()


def _read_record(store: Store, rel: str) -> dict | None:
    """A version file's record (None when there is no such file)."""
    try:
        return json.loads(store.read_bytes(rel))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise RegistryError(f"registry file {store.uri}/{rel} is corrupt ({e}); re-run "
                            "`tessera apply`") from e


def _metadata(current: _Current, name: str, version: str, rec: dict) -> dict:
    """A stored record with the description and tags ``current.json`` holds for it (when
    ``version`` is the current one), else those it was first applied with."""
    if current.views.get(name) == version and name in current.metadata:
        return {**rec, **current.metadata[name]}
    return rec


def load_module(path: str | Path) -> FeatureRepo:
    """Import a user's feature repo module and collect the definitions it builds."""
    path = Path(path).resolve()
    if not path.is_file():
        raise DefinitionError(f"no feature repo at {path}; pass the path of a .py file "
                              "that defines Entity/EventSource/FeatureView objects")
    name = f"_tessera_repo_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise DefinitionError(f"cannot import {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except DefinitionError:
        raise
    except Exception as e:
        raise DefinitionError(f"importing feature repo {path} failed: {e!r}; fix the module "
                              f"so that `python {path}` runs") from e
    finally:
        sys.path.remove(str(path.parent))
        sys.modules.pop(name, None)
    objects = [v for k, v in vars(module).items() if not k.startswith("_")
               and isinstance(v, Entity | EventSource | FeatureView | BatchFeatureView
                              | RequestFeatureView)]
    repo = FeatureRepo.of(objects)
    if not repo.views and not repo.sources:
        raise DefinitionError(f"feature repo {path} defines no EventSource, FeatureView or "
                              "BatchFeatureView at module level")
    return repo


@dataclass
class ApplyReport:
    """What ``apply`` did: per view its version and whether it is new, changed, unchanged or
    removed (removed: the version it had); the sources, so the caller can create their topics
    when a broker is configured."""

    views: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (version, status)
    sources: list[EventSource] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{status:9} {name} @ {version}"
                for name, (version, status) in sorted(self.views.items())]


@dataclass(frozen=True)
class ViewChange:
    """One line of a plan: ``status`` is new, changed, removed, metadata (description or tags
    only: same version) or unchanged; ``details`` say what differs."""

    name: str
    status: str
    before: str | None  # current version in the registry
    after: str | None  # version the repo would make current
    details: tuple[str, ...] = ()


@dataclass
class Plan:
    """What ``apply`` would do to the registry, computed without writing anything."""

    changes: list[ViewChange] = field(default_factory=list)
    # the version of current.json the plan was computed against (None: an empty registry),
    # and its generation: what apply(..., plan=) checks before it commits
    base: str | None = None
    generation: int = 0

    def by_status(self, *statuses: str) -> list[ViewChange]:
        return [c for c in self.changes if c.status in statuses]

    @property
    def empty(self) -> bool:
        return not self.by_status("new", "changed", "removed", "metadata")

    def lines(self) -> list[str]:
        out = []
        for c in self.changes:
            if c.status == "unchanged":
                continue
            mark = {"new": "+", "removed": "-", "changed": "~", "metadata": "~"}[c.status]
            if c.status == "new":
                head = f"{mark} {c.name} @ {c.after} (new)"
            elif c.status == "removed":
                head = f"{mark} {c.name} @ {c.before} (removed)"
            elif c.status == "changed":
                head = f"{mark} {c.name} @ {c.before} -> {c.after} (changed)"
            else:
                head = f"{mark} {c.name} @ {c.after} (description/tags only, same version)"
            out.append(head)
            out.extend(f"    {d}" for d in c.details)
        n = {s: len(self.by_status(s)) for s in ("new", "changed", "removed", "unchanged")}
        out.append(f"plan: {n['new']} new, {n['changed']} changed, {n['removed']} removed, "
                   f"{n['unchanged'] + len(self.by_status('metadata'))} unchanged")
        return out


def _record(view: AnyView) -> dict:
    rec = {"name": view.name, "version": view.version, "spec": view.spec(),
           "description": view.description, "tags": dict(view.tags)}
    if isinstance(view, FeatureView):
        rec["partitions"] = view.source.partitions
    return rec


def _spec_details(old: dict, new: dict) -> list[str]:
    """What differs between two specs of one view, in words a reviewer reads."""
    out = []
    if old.get("kind") != new.get("kind"):
        return [f"kind {old.get('kind')} -> {new.get('kind')}"]
    if new.get("kind") == "windowed":
        of = {f["name"]: f for f in old["features"]}
        nf = {f["name"]: f for f in new["features"]}
        out += [f"feature added: {n}" for n in nf if n not in of]
        out += [f"feature removed: {n}" for n in of if n not in nf]
        out += [f"feature changed: {n}" for n in nf if n in of and nf[n] != of[n]]
        os_, ns = old["source"], new["source"]
        for k in sorted(set(os_) | set(ns)):
            if os_.get(k) != ns.get(k):
                out.append(f"source {k}: {os_.get(k)!r} -> {ns.get(k)!r}")
    else:
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                out.append(f"{k}: {old.get(k)!r} -> {new.get(k)!r}")
    return out or ["spec differs"]


def plan(repo: FeatureRepo, settings: Settings) -> Plan:
    """Compare ``repo`` with the registry's current views (nothing is written)."""
    store = registry_store(settings)
    current = _read_current(store)
    before = current.views
    out = Plan(base=current.version, generation=current.generation)
    for name in sorted(set(before) | set(repo.views)):
        view = repo.views.get(name)
        old_version = before.get(name)
        if view is None:
            out.changes.append(ViewChange(name, "removed", old_version, None))
            continue
        if old_version is None:
            out.changes.append(ViewChange(name, "new", None, view.version))
            continue
        old = _read_record(store, _view_rel(name, old_version))
        if old is not None:
            old = _metadata(current, name, old_version, old)
        if old_version != view.version:
            details = _spec_details(old["spec"], view.spec()) if old else []
            out.changes.append(ViewChange(name, "changed", old_version, view.version,
                                          tuple(details)))
            continue
        meta = []
        if old is not None and old.get("description", "") != view.description:
            meta.append("description changed")
        if old is not None and old.get("tags", {}) != view.tags:
            meta.append(f"tags: {old.get('tags', {})} -> {view.tags}")
        out.changes.append(ViewChange(name, "metadata" if meta else "unchanged", old_version,
                                      view.version, tuple(meta)))
    return out


def apply(repo: FeatureRepo, settings: Settings, plan: Plan | None = None) -> ApplyReport:
    """Record every view of ``repo`` under its version and make those versions current.

    With ``plan`` (from ``plan(repo, settings)``), commit only if the registry is still the one
    the plan was computed against; otherwise, or when another ``apply`` commits between this
    one's read and its commit, raise ``RegistryConflict`` with nothing made current (version
    files already written stay: they are immutable and named by their content).
    """
    store = registry_store(settings)
    with store.lock(CURRENT):  # one machine's applies queue; put_if decides across machines
        current = _read_current(store)
        if plan is not None:
            _check_plan(plan, repo, current, store)
        before = current.views
        report = ApplyReport(sources=list(repo.sources.values()))
        index, metadata = {}, {}
        for name, view in sorted(repo.views.items()):
            rel = _view_rel(name, view.version)
            rec = _record(view)
            if not store.exists(rel):
                store.write_bytes(rel, _dumps(rec))  # same name, same spec: never rewritten
            status = ("unchanged" if before.get(name) == view.version
                      else "changed" if name in before else "new")
            report.views[name] = (view.version, status)
            index[name] = view.version
            metadata[name] = {"description": view.description, "tags": dict(view.tags)}
        for name in sorted(set(before) - set(index)):
            report.views[name] = (before[name], "removed")  # its version files stay
        doc = {"views": index, "metadata": metadata, "generation": current.generation + 1}
        if not store.put_if(CURRENT, _dumps(doc), current.version):
            raise RegistryConflict(
                f"another `tessera apply` committed to the feature registry {store.uri} while "
                f"this one was applying (it read generation {current.generation}); nothing of "
                "this apply was made current. Run `tessera apply` again to see the plan "
                "against the registry as it is now")
    return report


def _check_plan(the_plan: Plan, repo: FeatureRepo, current: _Current, store: Store) -> None:
    """Refuse a plan made against another registry state, or for other definitions."""
    if the_plan.base != current.version:
        raise RegistryConflict(
            f"the feature registry {store.uri} changed since the plan was computed "
            f"(generation {the_plan.generation} then, {current.generation} now: another "
            "`tessera apply` committed); nothing was applied. Run `tessera apply` again to "
            "see the plan against the registry as it is now")
    planned = {c.name: c.after for c in the_plan.changes if c.after is not None}
    if planned != {name: view.version for name, view in repo.views.items()}:
        raise RegistryError("this plan was computed for other definitions than the ones "
                            "being applied; compute the plan from the same repo")


def describe(view: AnyView) -> dict:
    """A view's catalog entry: what it computes, from what, under which version."""
    entry: dict = {"name": view.name, "version": view.version, "description": view.description,
                   "tags": dict(view.tags), "entity": {"name": view.entity.name,
                                                       "keys": list(view.entity.keys)}}
    from features.semantics.windows import format_duration

    if isinstance(view, FeatureView):
        src = view.source
        entry.update(kind="windowed", source={
            "name": src.name, "topic": src.topic, "timestamp_field": src.timestamp_field,
            "schema": dict(src.schema), "partitions": src.partitions})
        entry["features"] = [{
            "name": f.name, "aggregation": f.fn, "field": f.field,
            "type": _output_type(f.fn),
            "window": format_duration(f.window), "hop": format_duration(f.hop)}
            for f in view.features]
    else:
        entry.update(kind="batch", source={"path": view.path,
                                           "timestamp_field": view.timestamp_field},
                     ttl=format_duration(view.ttl))
        entry["features"] = [{"name": n, "type": t} for n, t in view.schema.items()]
    return entry


def _output_type(fn: str) -> str:
    """The type a windowed feature reads as (online and in training sets): what its
    aggregation's ``finalize`` returns (count: int; the others: float, null when empty)."""
    from features.semantics.aggregations import get_aggregation

    ann = get_aggregation(fn).finalize.__annotations__.get("return", "float")
    ann = ann if isinstance(ann, str) else getattr(ann, "__name__", "float")
    return "int" if ann.split("|")[0].strip() == "int" else "float"


def _entity(spec: dict) -> Entity:
    return Entity(spec["name"], spec["keys"])


def _source(spec: dict, partitions: int) -> EventSource:
    return EventSource(spec["name"], spec["schema"], spec["timestamp_field"],
                       _entity(spec["entity"]), topic=spec["topic"], partitions=partitions,
                       max_future=spec.get("max_future", DEFAULT_MAX_FUTURE))


def view_from_record(rec: dict) -> AnyView:
    """Rebuild a view object from its stored record."""
    spec = rec["spec"]
    if spec["kind"] == "windowed":
        aggs = [Aggregate(f["fn"], [f["window"]], field=f["field"], hop=f["hop"], name=f["name"])
                for f in spec["features"]]
        return FeatureView(spec["name"], _source(spec["source"], rec.get("partitions", 4)), aggs,
                           description=rec.get("description", ""), tags=rec.get("tags"))
    if spec["kind"] == "batch":
        return BatchFeatureView(spec["name"], _entity(spec["entity"]), spec["path"],
                                spec["timestamp_field"], spec["schema"], spec["ttl"],
                                description=rec.get("description", ""), tags=rec.get("tags"))
    raise RegistryError(f"unknown view kind {spec['kind']!r} in the registry; upgrade tessera")


def load_view(settings: Settings, name: str, version: str) -> AnyView:
    """One stored version of a view (current or not)."""
    store = registry_store(settings)
    return _load_view(store, _read_current(store), name, version)


def _load_view(store: Store, current: _Current, name: str, version: str) -> AnyView:
    rel = _view_rel(name, version)
    rec = _read_record(store, rel)
    if rec is None:
        known = sorted(n.removesuffix(".json") for n in store.list_dir(f"views/{name}")
                       if n.endswith(".json"))
        raise RegistryError(f"view {name!r} has no version {version!r} in the registry "
                            f"{store.uri} (known: {', '.join(known) or 'none'})")
    view = view_from_record(_metadata(current, name, version, rec))
    if view.version != version:
        raise RegistryError(f"registry file {store.uri}/{rel} rebuilds to version "
                            f"{view.version}, not {version}; it was edited by hand or written "
                            "by another tessera")
    return view


def load_repo(settings: Settings, versions: dict[str, str] | None = None) -> FeatureRepo:
    """The current definitions, with ``versions`` (view name -> version) pinning some views."""
    store = registry_store(settings)
    current = _require_current(store)
    chosen = {**current.views, **(versions or {})}
    return FeatureRepo.of([_load_view(store, current, n, v) for n, v in sorted(chosen.items())])
