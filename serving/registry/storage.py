"""Where model files live: a local folder or any pyarrow filesystem URI (s3://, gs://, file://).

The registry only needs five verbs (read, write, exists, list, append a line), so it talks to
this small class and never to a filesystem API directly. Whole-file writes go to a temporary
name first and are then moved into place, so a reader never sees half a file on a local disk.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow.fs as pafs

from features.errors import RegistryError


class ModelStorage:
    """Files under one root, addressed by '/'-separated relative paths."""

    def __init__(self, root: str | Path) -> None:
        text = str(root)
        if "://" in text:
            try:
                self.fs, self.root = pafs.FileSystem.from_uri(text)
            except (ValueError, OSError) as e:
                raise RegistryError(
                    f"cannot open model storage {text!r}: {e}; use a local folder or a URI "
                    "pyarrow understands (file:///abs/path, s3://bucket/prefix, gs://...)"
                ) from e
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(text).resolve())
        self.uri = text
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def _p(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self._p(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        try:
            with self.fs.open_input_stream(self._p(rel)) as f:
                return f.read()
        except FileNotFoundError as e:
            raise RegistryError(f"no file {rel!r} in model storage {self.uri!r}") from e

    def write_bytes(self, rel: str, data: bytes) -> None:
        path = self._p(rel)
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        if not self.local:  # object stores replace whole objects atomically already
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, path)

    def append_line(self, rel: str, line: str) -> None:
        """Append one line (an audit record). Object stores cannot append: rewrite the file."""
        path = self._p(rel)
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        data = (line.rstrip("\n") + "\n").encode()
        if self.local:
            with open(path, "ab") as f:
                f.write(data)
            return
        old = self.read_bytes(rel) if self.exists(rel) else b""
        self.write_bytes(rel, old + data)

    def list_dir(self, rel: str) -> list[str]:
        """Names directly under ``rel`` (empty when it does not exist)."""
        sel = pafs.FileSelector(self._p(rel), allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(sel))

    def mtime_ns(self, rel: str) -> int | None:
        info = self.fs.get_file_info(self._p(rel))
        if info.type == pafs.FileType.NotFound or info.mtime_ns is None:
            return None
        return info.mtime_ns
