"""Loaded model versions and the aliases the scorer follows (hot reload).

A ``LoadedModel`` is immutable: one version, its feature order and its predictor. Serving a new
version means building a new ``LoadedModel`` off the request path and swapping one reference;
a request that already took the old one finishes with it, so a swap never fails a request.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from features.errors import RegistryError
from serving.registry import CHAMPION, ModelRegistry
from serving.scorer.fast import FastPredictor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    features: tuple[str, ...]
    predictor: FastPredictor
    metadata: dict[str, Any]


def load_model(registry: ModelRegistry, name: str, ref: str = CHAMPION) -> LoadedModel:
    mv = registry.get(name, ref)
    booster = mv.booster()
    if booster.num_feature() != len(mv.features):
        raise RegistryError(
            f"{name} v{mv.version}: the model has {booster.num_feature()} inputs but its "
            f"metadata lists {len(mv.features)} features; re-register it with `tessera train`"
        )
    return LoadedModel(name, mv.version, tuple(mv.features), FastPredictor(booster), mv.metadata)


class ModelSet:
    """The models a scorer serves, each following an alias, plus any version on demand."""

    def __init__(
        self, registry: ModelRegistry, reload_s: float = 1.0, cache_versions: int = 8
    ) -> None:
        self.registry = registry
        self.reload_s = reload_s
        self._served: dict[str, LoadedModel] = {}
        self._refs: dict[str, str] = {}
        self._versions: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._cache_size = cache_versions
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listeners: list[Callable[[LoadedModel, LoadedModel | None], None]] = []

    def serve(self, name: str, ref: str = CHAMPION) -> LoadedModel:
        """Load ``name`` at ``ref`` (alias or version) and keep following the alias."""
        m = load_model(self.registry, name, ref)
        self._refs[name] = ref
        self._install(m, None)
        return m

    def get(self, name: str) -> LoadedModel:
        try:
            return self._served[name]
        except KeyError:
            raise RegistryError(
                f"model {name!r} is not served here; served: {', '.join(self._served) or 'none'}"
            ) from None

    @property
    def names(self) -> list[str]:
        return list(self._served)

    def version(self, name: str, version: str) -> LoadedModel:
        """Any version of ``name`` (cached): what shadow models and A/B arms score with."""
        cur = self._served.get(name)
        if cur is not None and cur.version == version:
            return cur
        key = (name, version)
        with self._lock:
            m = self._versions.get(key)
            if m is not None:
                self._versions.move_to_end(key)
                return m
        m = load_model(self.registry, name, version)
        with self._lock:
            self._versions[key] = m
            while len(self._versions) > self._cache_size:
                self._versions.popitem(last=False)
        return m

    def predict_fn(self, name: str) -> Callable[[str, np.ndarray], np.ndarray]:
        """``(version, X) -> scores`` for ``name``: the callable experiment routers take."""
        return lambda version, x: self.version(name, version).predictor.predict(x)

    def refresh(self) -> list[str]:
        """Re-resolve every followed alias; load and swap the ones that moved."""
        changed = []
        for name, ref in list(self._refs.items()):
            try:
                version = self.registry.resolve(name, ref)
                if version != self._served[name].version:
                    self._install(load_model(self.registry, name, version), self._served[name])
                    changed.append(name)
            except Exception as e:  # keep serving the loaded version if the registry hiccups
                log.warning("reload of %s@%s failed, still serving v%s: %r",
                            name, ref, self._served[name].version, e)
        return changed

    def _install(self, new: LoadedModel, old: LoadedModel | None) -> None:
        self._served[new.name] = new
        if old is not None:
            log.info("%s: now serving v%s (was v%s)", new.name, new.version, old.version)
        for fn in self.listeners:
            fn(new, old)

    def start(self) -> ModelSet:
        """Poll the aliases every ``reload_s`` seconds in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="model-reload", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.reload_s):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
