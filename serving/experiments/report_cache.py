"""Reports cached per (spec revision, logged data, parameters).

A report reads and joins whole prediction and outcome logs; building it again for every
dashboard poll or API client kept cores busy. The key holds the spec's revision and the state
of both logs' manifests (the sink commits by replacing ``_manifest.json``), so a new spec, a
new batch of labels or new parameters build a fresh report and nothing stale is served.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from features.offline.storage import Store, is_uri
from serving.experiments.report import dataset_dirs
from serving.experiments.sink import MANIFEST
from serving.experiments.spec import DeploymentStore


def _manifest_state(folder: Path | str) -> tuple:
    """What changes whenever the log at ``folder`` commits. A local manifest's mtime and size;
    in a bucket its version token (ETag / generation, one small GET), since an object's
    modification time has only second resolution there."""
    if is_uri(folder):
        store = Store(folder)
        return (store.uri, store.read_versioned(MANIFEST)[1])
    path = Path(folder) / MANIFEST
    try:
        st = path.stat()
    except OSError:  # not written yet: no state to key on
        return (str(path), None)
    return (str(path), st.st_mtime_ns, st.st_size)


class ReportCache:
    """At most ``size`` reports; ``get(name, params, build)`` builds on a miss."""

    def __init__(self, models_dir: Path | str, offline_dir: Path | str, size: int = 64) -> None:
        self.store = DeploymentStore(models_dir)
        self.offline_dir = offline_dir
        self.size = size
        self.builds = 0
        self._cache: OrderedDict[tuple, dict] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, name: str, params: dict[str, Any]) -> tuple:
        preds, outs = dataset_dirs(self.offline_dir)
        return (name, self.store.revision(name), _manifest_state(preds), _manifest_state(outs),
                tuple(sorted(params.items())))

    def get(self, name: str, params: dict[str, Any], build: Callable[[], dict]) -> dict:
        key = self.key(name, params)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        report = build()
        with self._lock:
            self.builds += 1
            self._cache[key] = report
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return report
