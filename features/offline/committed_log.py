"""The commit protocol of Tessera's manifest-committed Parquet logs, on disk or object store.

A log is a folder of immutable data files plus one small JSON manifest naming the committed
ones. A writer (1) reads the manifest and its version, (2) writes new data files under names no
other writer uses, (3) swaps the manifest with a conditional put (``Store.put_if``). Until (3)
succeeds nothing it wrote is visible: readers open only listed files, so a crash at any point
leaves the log as it was plus unlisted files, which a later writer deletes. If another writer
committed in between, (3) fails, the data files of this attempt are deleted and the update runs
again on the new manifest, so two writers never lose each other's commit.

On a local disk the whole update also holds an ``flock`` (one writer at a time per machine, so
unlisted files found under the lock are certainly orphans); on an object store there is no
lock and the conditional put alone decides.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from features.errors import OfflineStoreError
from features.offline.storage import FileEntry, Store

T = TypeVar("T")
ATTEMPTS = 50
ORPHAN_GRACE_S = 3600.0  # object stores: unlisted files younger than this may be in flight


def unique_name(store: Store, name: str) -> str:
    """``name`` with a random suffix on an object store, so two writers never overwrite each
    other's data files; local names stay as they are (the flock serialises writers there)."""
    if store.local:
        return name
    stem, dot, ext = name.rpartition(".")
    return f"{stem}-{uuid.uuid4().hex[:12]}{dot}{ext}"


def remove_orphans(store: Store, candidates: Iterable[FileEntry], listed: set[str]) -> None:
    """Delete the candidate files no manifest lists (left by a crash before its commit). On a
    local disk, call it under the lock; on an object store only files older than
    ``ORPHAN_GRACE_S`` go, since a younger one may be another writer's, about to commit."""
    cutoff = None if store.local else (time.time() - ORPHAN_GRACE_S) * 1e9
    for e in candidates:
        if e.rel not in listed and (cutoff is None or (e.mtime_ns or 0) < cutoff):
            store.delete(e.rel)


class CommitConflict(OfflineStoreError):
    """Another writer committed the manifest after this one read it; redo the update."""


class Attempt:
    """One try at an update: records the data files it wrote (deleted if the commit loses
    the race) and the files to delete once it has committed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.written: list[str] = []
        self.delete_after: list[str] = []

    def write_parquet(self, rel: str, table: pa.Table) -> int:
        self.written.append(rel)
        return self.store.write_parquet(rel, table)

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.written.append(rel)
        self.store.write_bytes(rel, data)

    def discard(self) -> None:
        for rel in self.written:
            self.store.delete(rel)


class Manifest(dict):
    """A manifest's content, carrying the version it was read at (what ``put_if`` checks)."""

    version: str | None = None


class ManifestLog:
    """A manifest at ``manifest_rel`` in ``store`` and the data files it names."""

    def __init__(self, store: Store, manifest_rel: str = "_manifest.json",
                 attempts: int = ATTEMPTS, defaults: dict | None = None,
                 lock_rel: str | None = None) -> None:
        self.store = store
        self.manifest_rel = manifest_rel
        self.lock_rel = lock_rel or manifest_rel  # local disks: <lock_rel>.lock is the flock
        self.attempts = max(1, attempts)
        self.defaults = defaults or {}  # keys a read manifest gets when it lacks them

    def read(self) -> Manifest:
        """The committed manifest (empty before the first commit), with its version."""
        data, version = self.store.read_versioned(self.manifest_rel)
        manifest = Manifest()
        if data is not None:
            try:
                manifest.update(json.loads(data))
            except json.JSONDecodeError as e:
                raise OfflineStoreError(
                    f"manifest {self.store.uri}/{self.manifest_rel} is corrupt ({e}); restore "
                    "it from a backup or delete the folder and write the data again") from e
        for k, v in self.defaults.items():
            manifest.setdefault(k, json.loads(json.dumps(v)))  # a fresh copy
        manifest.version = version
        return manifest

    def commit(self, manifest: Manifest) -> None:
        """Swap in ``manifest`` (its generation advanced) if the stored one is still the one
        it was read from; ``CommitConflict`` if another writer committed since."""
        manifest["generation"] = int(manifest.get("generation", 0)) + 1
        data = json.dumps(manifest, sort_keys=True, indent=0).encode()
        if not self.store.put_if(self.manifest_rel, data, manifest.version):
            raise CommitConflict(
                f"{self.store.uri}/{self.manifest_rel} changed since generation "
                f"{manifest['generation'] - 1} was read")

    def update(self, change: Callable[[Manifest, Attempt], T],
               commit: Callable[[Manifest], None] | None = None) -> T:
        """Run ``change(manifest, attempt)`` on the current manifest, in place, and commit
        the result; a change that leaves the manifest as it was commits nothing. ``change``
        writes its data files through ``attempt`` and may run more than once (when another
        writer commits first), so it must derive everything from the manifest it is given.
        An exception from ``change`` deletes the attempt's files and propagates; one from the
        swap propagates and leaves them (the swap may have landed).
        ``commit`` (default ``self.commit``) is the swap, for callers that observe it."""
        commit = commit or self.commit
        for i in range(self.attempts):
            with self.store.lock(self.lock_rel):
                manifest = self.read()
                before = json.dumps(manifest, sort_keys=True)
                attempt = Attempt(self.store)
                try:
                    result = change(manifest, attempt)
                except Exception:  # an interrupt is left like a crash: orphans, removed later
                    attempt.discard()
                    raise
                if json.dumps(manifest, sort_keys=True) == before:
                    attempt.discard()
                    return result
                try:
                    commit(manifest)
                except CommitConflict:
                    attempt.discard()
                else:
                    for rel in attempt.delete_after:
                        self.store.delete(rel)
                    return result
                # any other error of the swap propagates with the files kept: its outcome is
                # unknown (a PUT can land and its answer be lost), and if it landed they are
                # the committed data; if not, they are orphans, removed later
            time.sleep(random.uniform(0, min(0.01 * 2 ** min(i, 5), 0.3)))  # back off, redo
        raise CommitConflict(
            f"{self.store.uri}/{self.manifest_rel}: {self.attempts} commits in a row lost the "
            "race to other writers; too many writers on one log, retry later")


def rewrite_without(attempt: Attempt, table: pa.Table, drop: pa.Array, new_rel: str
                    ) -> tuple[int, dict | None]:
    """Write ``table`` minus the rows where ``drop`` is true to ``new_rel`` (through
    ``attempt``, so a lost race deletes it); returns (rows removed, ``{"rows", "bytes"}`` of the
    new file, or None when no row is left and nothing was written). The caller swaps the new
    file for the old one in its manifest and deletes the old one after the commit."""
    removed = int(pc.sum(drop).as_py() or 0)
    kept = table.filter(pc.invert(drop))
    if kept.num_rows == 0:
        return removed, None
    return removed, {"rows": kept.num_rows, "bytes": attempt.write_parquet(new_rel, kept)}
