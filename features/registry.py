"""The registry: every applied feature view's spec, stored under its content hash.

``registry/views/<name>/<version>.json`` holds one version (never rewritten, so models trained
on an old version can still rebuild it) and ``registry/current.json`` says which version of each
view the last ``apply`` made current. Specs are plain JSON; ``load_repo`` rebuilds the
definition objects from them, and the rebuilt views have the same ``.version``.
"""

from __future__ import annotations

import importlib.util
import json
import os
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
from features.settings import Settings


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
               and isinstance(v, Entity | EventSource | FeatureView | BatchFeatureView)]
    repo = FeatureRepo.of(objects)
    if not repo.views:
        raise DefinitionError(f"feature repo {path} defines no FeatureView or BatchFeatureView "
                              "at module level")
    return repo


@dataclass
class ApplyReport:
    """What ``apply`` did: per view its version and whether it is new, changed or unchanged;
    the sources, so the caller can create their topics when a broker is configured."""

    views: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (version, status)
    sources: list[EventSource] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{status:9} {name} @ {version}"
                for name, (version, status) in sorted(self.views.items())]


def _record(view: AnyView) -> dict:
    rec = {"name": view.name, "version": view.version, "spec": view.spec(),
           "description": view.description}
    if isinstance(view, FeatureView):
        rec["partitions"] = view.source.partitions
    return rec


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RegistryError(f"registry file {path} is missing; run `tessera apply --repo "
                            "PATH` first") from None
    except json.JSONDecodeError as e:
        raise RegistryError(f"registry file {path} is corrupt ({e}); re-run `tessera apply`") \
            from e


def apply(repo: FeatureRepo, settings: Settings) -> ApplyReport:
    """Record every view of ``repo`` under its version and make those versions current."""
    root = settings.registry_dir
    current_path = root / "current.json"
    before = _read_json(current_path)["views"] if current_path.exists() else {}
    report = ApplyReport(sources=list(repo.sources.values()))
    index = {}
    for name, view in sorted(repo.views.items()):
        path = root / "views" / name / f"{view.version}.json"
        if not path.exists():
            _write_json(path, _record(view))
        status = ("unchanged" if before.get(name) == view.version
                  else "changed" if name in before else "new")
        report.views[name] = (view.version, status)
        index[name] = view.version
    _write_json(current_path, {"views": index})
    return report


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
                           description=rec.get("description", ""))
    if spec["kind"] == "batch":
        return BatchFeatureView(spec["name"], _entity(spec["entity"]), spec["path"],
                                spec["timestamp_field"], spec["schema"], spec["ttl"],
                                description=rec.get("description", ""))
    raise RegistryError(f"unknown view kind {spec['kind']!r} in the registry; upgrade tessera")


def load_view(settings: Settings, name: str, version: str) -> AnyView:
    """One stored version of a view (current or not)."""
    path = settings.registry_dir / "views" / name / f"{version}.json"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.json"))
        raise RegistryError(f"view {name!r} has no version {version!r} in the registry "
                            f"(known: {', '.join(known) or 'none'})")
    view = view_from_record(_read_json(path))
    if view.version != version:
        raise RegistryError(f"registry file {path} rebuilds to version {view.version}, not "
                            f"{version}; it was edited by hand or written by another tessera")
    return view


def load_repo(settings: Settings, versions: dict[str, str] | None = None) -> FeatureRepo:
    """The current definitions, with ``versions`` (view name -> version) pinning some views."""
    current = dict(_read_json(settings.registry_dir / "current.json")["views"])
    current.update(versions or {})
    return FeatureRepo.of([load_view(settings, n, v) for n, v in sorted(current.items())])
