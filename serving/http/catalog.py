"""``GET /v1/catalog``: the feature views this scorer serves and which registered models use them.

One join of the feature registry (``features.registry.describe``) with the model registry
(each version's ``features`` and ``feature_views`` metadata, and the aliases pointing at it);
``tessera features list|describe`` and ``tessera apply``'s guard use the same join.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from features.definitions import FeatureRepo
from features.registry import describe
from serving.registry import ModelRegistry

if TYPE_CHECKING:
    from fastapi import APIRouter


def models_using(registry: ModelRegistry) -> dict[str, list[dict[str, Any]]]:
    """View name -> every registered model version reading it: ``{model, version, aliases,
    view_version}`` (``view_version``: the view's version it was trained on, when recorded)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name in registry.models():
        by_version: dict[str, list[str]] = {}
        for alias, v in registry.aliases(name).items():
            by_version.setdefault(v, []).append(alias)
        for version in registry.versions(name):
            meta = registry.metadata(name, version)
            trained_on = meta.get("feature_views") or {}
            views = {r.split(":", 1)[0] for r in meta.get("features", []) if ":" in r}
            for view in sorted(views):
                out.setdefault(view, []).append({
                    "model": name, "version": version,
                    "aliases": sorted(by_version.get(version, [])),
                    "view_version": trained_on.get(view)})
    return out


def catalog(repo: FeatureRepo, registry: ModelRegistry | None) -> dict[str, Any]:
    """Every view of ``repo`` described, with the models that use it."""
    users = models_using(registry) if registry is not None else {}
    views = []
    for name in sorted(repo.views):
        entry = describe(repo.views[name])
        entry["models"] = users.get(name, [])
        views.append(entry)
    return {"views": views}


def aliased_users(users: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The model versions an alias points at (what is, or may again be, served)."""
    return [u for u in users if u["aliases"]]


def catalog_router(repo: FeatureRepo, registry: ModelRegistry | None) -> APIRouter:
    from fastapi import APIRouter  # here: the CLI reads this module without the web stack

    router = APIRouter()

    @router.get("/v1/catalog", tags=["features"],
                summary="Feature views served (entity, source, features with types, windows and "
                "hops, version, description, tags) and the registered models that use each")
    def get_catalog() -> dict[str, Any]:  # a plain def: reads files, runs in the thread pool
        return catalog(repo, registry)

    return router
