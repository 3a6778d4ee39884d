"""Erase one entity's rows from the prediction and outcome logs (``tessera forget``).

Both logs (``serving.experiments.sink``: Parquet files listed by ``_manifest.json``) carry the
entity as ``entity_key``, the scorer's join of its key values with ``|``. The files holding it
are rewritten without those rows and the manifest is swapped once, under the same commit
protocol the sink and ``import_frame`` use, so a running sink keeps its own commits and a crash
leaves the old or the new file list. What stays: the records in the Kafka topics the sink reads
(``predictions``/``outcomes``) until their retention expires.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pyarrow.compute as pc

from features.offline.committed_log import Attempt, Manifest, ManifestLog, rewrite_without
from features.offline.storage import Store
from serving.experiments.sink import _EMPTY, MANIFEST


def scorer_key(values: tuple[str, ...] | list[str]) -> str:
    """The ``entity_key`` the scorer logs for these key values (``Scorer.entity_key``)."""
    return "|".join(str(v) for v in values)


def forget_logged(folder: Path | str, key: str) -> int:
    """Remove the rows whose ``entity_key`` is ``key`` from the log in ``folder``; returns
    how many went (0 when the folder has no log)."""
    store = Store(folder)
    if not store.exists(MANIFEST):
        return 0

    def change(manifest: Manifest, attempt: Attempt) -> int:
        removed, files = 0, []
        for name in manifest["files"]:
            table = store.read_table(name)
            if "entity_key" not in table.column_names:
                files.append(name)
                continue
            drop = pc.fill_null(pc.equal(table.column("entity_key"), key), False)
            if not pc.any(drop).as_py():
                files.append(name)
                continue
            digest = hashlib.sha256(name.encode()).hexdigest()[:12]
            new = f"forget-{time.time_ns()}-{digest}.parquet"
            n, info = rewrite_without(attempt, table, drop, new)
            if info is not None:
                files.append(new)
            attempt.delete_after.append(name)
            removed += n
        manifest["files"] = files
        return removed

    return ManifestLog(store, MANIFEST, defaults=_EMPTY).update(change)
