"""Where model files live: a local folder or any pyarrow filesystem URI (s3://, gs://, file://).

The registry only needs a few verbs (read, write, create, exists, list, append a line), so it
talks to this small class and never to a filesystem API directly. It sits on the event log's
``features.offline.storage.Store``, so endpoints and credentials are configured the same way
(standard AWS variables, or ``?endpoint_override=`` in the URI). Whole-file writes go to a
temporary name and are moved into place on a local disk; an object PUT is atomic already.
Creating a file that must not exist yet (a version's claim) and appending an audit line use
the store's conditional put on S3 and GCS, so two writers never both take one version number
and never drop each other's audit lines.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from features.errors import RegistryError
from features.offline.storage import StorageError, Store

APPEND_ATTEMPTS = 50


class ModelStorage:
    """Files under one root, addressed by '/'-separated relative paths."""

    def __init__(self, root: str | Path) -> None:
        try:
            self.store = Store(root)
        except StorageError as e:
            raise RegistryError(f"cannot open model storage: {e}") from e
        self.fs, self.root, self.local = self.store.fs, self.store.root, self.store.local
        self.uri = str(root)
        # other pyarrow URIs have no conditional put: there the last writer wins
        self._cas = self.local or self.store.conditional

    def _p(self, rel: str) -> str:
        return self.store.path(rel)

    def exists(self, rel: str) -> bool:
        return self.store.exists(rel)

    def read_bytes(self, rel: str) -> bytes:
        try:
            return self.store.read_bytes(rel)
        except FileNotFoundError as e:
            raise RegistryError(f"no file {rel!r} in model storage {self.uri!r}") from e

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.store.write_bytes(rel, data)

    def create(self, rel: str, data: bytes = b"") -> bool:
        """Write ``rel`` only if it does not exist yet; returns False if it did (another
        writer created it first: exclusive create on disk, ``If-None-Match: *`` on S3,
        ``ifGenerationMatch=0`` on GCS)."""
        if self.local:  # written aside, then hard-linked: atomic and exclusive
            path = Path(self._p(rel))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
            return True
        if not self._cas:
            if self.exists(rel):
                return False
            self.write_bytes(rel, data)
            return True
        return self.store.put_if(rel, data, None)

    def append_line(self, rel: str, line: str) -> None:
        """Append one line (an audit record). Object stores cannot append: the file is
        rewritten with a conditional put, redone when another writer appended first."""
        data = (line.rstrip("\n") + "\n").encode()
        if self.local:
            path = Path(self._p(rel))
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as f:
                f.write(data)
            return
        if not self._cas:
            old = self.read_bytes(rel) if self.exists(rel) else b""
            self.write_bytes(rel, old + data)
            return
        for _ in range(APPEND_ATTEMPTS):
            old, version = self.store.read_versioned(rel)
            if self.store.put_if(rel, (old or b"") + data, version):
                return
        raise RegistryError(f"{self.uri}/{rel}: {APPEND_ATTEMPTS} appends in a row lost the "
                            "race to other writers; retry")

    def update_json(self, rel: str, change: Callable[[dict], dict]) -> dict:
        """Read-modify-write of a small JSON file (``{}`` when absent). On S3 and GCS the write
        is a conditional put, and ``change`` runs again on the newer content when another writer
        wrote in between, so no update is lost; elsewhere the last writer wins."""
        for _ in range(APPEND_ATTEMPTS):
            if self.store.conditional:
                data, version = self.store.read_versioned(rel)
            else:
                data = self.read_bytes(rel) if self.exists(rel) else None
            new = change(json.loads(data) if data else {})
            out = json.dumps(new, indent=2, sort_keys=True).encode()
            if not self.store.conditional:
                self.write_bytes(rel, out)
                return new
            if self.store.put_if(rel, out, version):
                return new
        raise RegistryError(f"{self.uri}/{rel}: {APPEND_ATTEMPTS} writes in a row lost the "
                            "race to other writers; retry")

    def list_dir(self, rel: str) -> list[str]:
        """Names directly under ``rel`` (empty when it does not exist)."""
        return self.store.list_dir(rel)

    def mtime_ns(self, rel: str) -> int | None:
        return self.store.mtime_ns(rel)
