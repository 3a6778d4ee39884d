"""Where committed logs and registries keep their files: a local folder or an object store.

One small interface over ``pyarrow.fs`` (so ``s3://``, ``gs://``, ``file://`` and plain paths
all work for reading and writing whole files) plus the one verb object stores add that a
filesystem lacks: a *conditional put* (compare-and-swap of one small object). Object stores have
no atomic rename, so a commit there is "write immutable, uniquely named data files, then swap
the manifest with a conditional put"; ``put_if`` is that swap.

- Local folders: whole-file writes go to a temp name, are fsynced and renamed; ``put_if`` is
  compare-and-swap under ``lock`` (an ``flock`` beside the file), the version token a hash of
  the content.
- ``s3://``: ``put_if`` is a PUT with ``If-Match: <etag>`` (or ``If-None-Match: *`` to
  create), which S3 and S3-compatible servers answer 412 when another writer got there first.
  It needs boto3 (``pip install 'tessera[s3]'``). The endpoint, region and credentials come
  from the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...) or from
  the URI's query (``s3://bucket/prefix?endpoint_override=http://host:port``), which pyarrow
  and boto3 both read.
- ``gs://``: ``put_if`` is an upload with ``ifGenerationMatch=<generation>`` (``0`` to create),
  which GCS answers 412 when another writer got there first; the version token is the object's
  generation, read in the same GET as its content. It needs google-cloud-storage
  (``pip install 'tessera[gcs]'``); credentials are Google's application default ones. An
  emulator or private endpoint is named by ``STORAGE_EMULATOR_HOST`` (``http://host:port``;
  anonymous, as google-cloud-storage treats it) or in the URI as pyarrow spells it:
  ``gs://anonymous@bucket/prefix?endpoint_override=host:port&scheme=http`` (``anonymous@``:
  no credentials). ``retry_limit_seconds=`` bounds how long both pyarrow and the conditional
  put retry an unreachable endpoint.
- Other URIs read and write through pyarrow, but have no conditional put here: ``put_if``
  raises ``StorageError`` rather than risk a lost update.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import io
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from features.errors import TesseraError


class StorageError(TesseraError):
    """A storage root cannot be opened or does not support what a writer needs."""


@dataclass(frozen=True)
class FileEntry:
    rel: str  # '/'-separated, relative to the store's root
    size: int
    mtime_ns: int | None


def is_uri(root: str | Path) -> bool:
    return "://" in str(root)


class Store:
    """Files under one root, addressed by '/'-separated relative paths."""

    def __init__(self, root: str | Path) -> None:
        text = str(root)
        self.uri = text
        self._s3 = None
        self._query = parse_qs(urlsplit(text).query)  # endpoint_override=, region= (children too)
        if is_uri(text) and not text.startswith("file://"):
            try:
                self.fs, path = _open_filesystem(text, self._query)
            except (ValueError, OSError, pa.ArrowException) as e:
                raise StorageError(
                    f"cannot open storage {text!r}: {e}; use a local folder or a URI pyarrow "
                    "understands (s3://bucket/prefix, gs://bucket/prefix, file:///abs/path)"
                ) from e
            self.root = path.rstrip("/")
            self.local = isinstance(self.fs, pafs.LocalFileSystem)
            self.scheme = urlsplit(text).scheme
        else:
            folder = Path(text.removeprefix("file://")).expanduser().resolve()
            self.fs, self.root, self.local, self.scheme = (
                pafs.LocalFileSystem(), str(folder), True, "file")

    # -- paths --------------------------------------------------------------------------------

    def path(self, rel: str) -> str:
        """The path of ``rel`` for ``self.fs`` (a local path when ``local``)."""
        return f"{self.root}/{rel}" if rel else self.root

    def child(self, rel: str) -> Store:
        """The store rooted at ``rel`` under this one (same filesystem)."""
        sub = Store.__new__(Store)
        sub.__dict__.update(self.__dict__)
        sub.root = self.path(rel.strip("/"))
        sub.uri = f"{self.uri.split('?', 1)[0].rstrip('/')}/{rel.strip('/')}"
        return sub

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # -- whole files --------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        """The file's content; ``FileNotFoundError`` when there is none."""
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` whole: readers see the old or the new content, never a part."""
        path = self.path(rel)
        if not self.local:  # an object PUT replaces the whole object atomically
            if self.scheme != "s3" and "/" in path:  # S3 has no folders; others may need them
                self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path).with_name(f".{Path(path).name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def write_parquet(self, rel: str, table: pa.Table) -> int:
        """Write an immutable data file (zstd Parquet); returns its size in bytes."""
        if not self.local:
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="zstd")
            self.write_bytes(rel, buf.getvalue())
            return buf.tell()
        path = Path(self.path(rel))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path.stat().st_size

    def read_table(self, rel: str) -> pa.Table:
        return pq.read_table(self.path(rel), filesystem=self.fs)

    def delete(self, rel: str) -> None:
        """Remove ``rel`` if it exists."""
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass

    def list_files(self, rel: str = "", recursive: bool = True) -> list[FileEntry]:
        """Files under ``rel`` (empty when it does not exist), paths relative to ``rel``."""
        base = self.path(rel).rstrip("/")
        sel = pafs.FileSelector(base, allow_not_found=True, recursive=recursive)
        out = []
        for info in self.fs.get_file_info(sel):
            if info.type == pafs.FileType.File:
                out.append(FileEntry(info.path[len(base) + 1:], info.size or 0, info.mtime_ns))
        return sorted(out, key=lambda e: e.rel)

    def list_dir(self, rel: str) -> list[str]:
        """Names directly under ``rel`` (files and folders; empty when it does not exist)."""
        sel = pafs.FileSelector(self.path(rel), allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(sel))

    def mtime_ns(self, rel: str) -> int | None:
        info = self.fs.get_file_info(self.path(rel))
        if info.type == pafs.FileType.NotFound or info.mtime_ns is None:
            return None
        return info.mtime_ns

    # -- compare and swap ---------------------------------------------------------------------

    @contextmanager
    def lock(self, rel: str) -> Iterator[None]:
        """Serialise this machine's writers of ``rel`` (an ``flock`` beside it on a local disk;
        nothing on an object store, where ``put_if`` alone decides who wins)."""
        if not self.local:
            yield
            return
        path = Path(self.path(rel))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @property
    def conditional(self) -> bool:
        """An object store whose ``put_if`` is the server's own precondition (S3, GCS): a
        read-modify-write there needs no lock."""
        return self.scheme in ("s3", "gs")

    def read_versioned(self, rel: str) -> tuple[bytes | None, str | None]:
        """The content of ``rel`` and a version token to pass to ``put_if`` (None, None when
        there is no such file)."""
        if self.scheme == "s3":
            return self._s3_get(rel)
        if self.scheme == "gs":
            return self._gcs_get(rel)
        try:
            data = self.read_bytes(rel)
        except FileNotFoundError:
            return None, None
        return data, hashlib.sha256(data).hexdigest()

    def put_if(self, rel: str, data: bytes, version: str | None) -> bool:
        """Write ``data`` only if ``rel`` is still at ``version`` (None: only if it does not
        exist); returns False when another writer changed it first. Locally, call it while
        holding ``lock(rel)``."""
        if self.scheme == "s3":
            return self._s3_put_if(rel, data, version)
        if self.scheme == "gs":
            return self._gcs_put_if(rel, data, version)
        if not self.local:
            raise StorageError(
                f"{self.uri}: {self.scheme}:// has no conditional put in Tessera yet, so "
                "concurrent commits could lose an update; use a local folder, s3:// or gs://")
        _, current = self.read_versioned(rel)
        if current != version:
            return False
        self.write_bytes(rel, data)
        return True

    # -- S3 through boto3 (pyarrow's S3 filesystem has no conditional writes) -----------------

    def _s3_client(self):
        if self._s3 is None:
            query = self._query
            endpoint = region = None
            if query.get("endpoint_override"):
                url = query["endpoint_override"][0]
                endpoint = url if "://" in url else f"http://{url}"
            if query.get("region"):
                region = query["region"][0]
            self._s3 = _boto3_client(endpoint, region, os.environ.get("AWS_ENDPOINT_URL"))
        return self._s3

    def _bucket_key(self, rel: str) -> tuple[str, str]:
        bucket, _, key = self.path(rel).partition("/")
        return bucket, key

    def _s3_get(self, rel: str) -> tuple[bytes | None, str | None]:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._s3_client()
        bucket, key = self._bucket_key(rel)
        try:
            resp = client.get_object(Bucket=bucket, Key=key)
            return resp["Body"].read(), resp["ETag"]
        except client.exceptions.NoSuchKey:
            return None, None
        except (BotoCoreError, ClientError) as e:
            raise _io_error("S3 GET", f"s3://{bucket}/{key}", e) from e

    def _s3_put_if(self, rel: str, data: bytes, version: str | None) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._s3_client()
        bucket, key = self._bucket_key(rel)
        cond = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        try:
            client.put_object(Bucket=bucket, Key=key, Body=data, **cond)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # 412: the precondition failed; 409: a concurrent conditional write is in flight
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                    409, 412):
                return False
            raise _io_error("S3 PUT", f"s3://{bucket}/{key}", e) from e
        except BotoCoreError as e:
            raise _io_error("S3 PUT", f"s3://{bucket}/{key}", e) from e
        return True

    # -- GCS through google-cloud-storage (pyarrow's GCS filesystem has no preconditions) ------

    def _gcs_blob(self, rel: str):
        bucket, key = self._bucket_key(rel)
        return _gcs_client(*_gcs_config(self.uri, self._query)).bucket(bucket).blob(key)

    def _gcs_get(self, rel: str) -> tuple[bytes | None, str | None]:
        blob = self._gcs_blob(rel)  # first: a StorageError naming the extra if it is missing
        from google.api_core import exceptions as gexc

        try:  # one GET: the generation comes back in the response's x-goog-generation
            data = blob.download_as_bytes(retry=_gcs_retry(self._query))
        except gexc.NotFound:
            return None, None
        except _gcs_errors() as e:
            raise _io_error("GCS GET", f"gs://{blob.bucket.name}/{blob.name}", e) from e
        if blob.generation is None:
            raise OSError(f"GCS GET gs://{blob.bucket.name}/{blob.name} returned no generation "
                          "header; this endpoint cannot take conditional puts")
        return data, str(blob.generation)

    def _gcs_put_if(self, rel: str, data: bytes, version: str | None) -> bool:
        blob = self._gcs_blob(rel)
        from google.api_core import exceptions as gexc

        if version is None and "/" in rel:  # pyarrow lists a folder by its marker object
            self.fs.create_dir(self.path(rel).rsplit("/", 1)[0], recursive=True)
        token = uuid.uuid4().hex
        blob.metadata = {_GCS_WRITER: token}
        where = f"gs://{blob.bucket.name}/{blob.name}"
        retry = _gcs_retry(self._query)
        try:  # a conditional upload is safe to retry: the library does, on 5xx and resets
            blob.upload_from_string(data, content_type="application/octet-stream",
                                    if_generation_match=0 if version is None else int(version),
                                    retry=retry)
        except gexc.PreconditionFailed:
            # a retry after a lost response meets our own write: the writer token tells
            try:
                now = blob.bucket.get_blob(blob.name, retry=retry)
            except _gcs_errors() as e:
                raise _io_error("GCS GET", where, e) from e
            return now is not None and (now.metadata or {}).get(_GCS_WRITER) == token
        except _gcs_errors() as e:
            raise _io_error("GCS PUT", where, e) from e
        return True


def _io_error(op: str, where: str, e: Exception) -> OSError:
    """Object store failures as ``OSError``, like pyarrow's: writers (the worker's offline
    sink) retry those with backoff, as they do a full disk."""
    return OSError(f"{op} {where} failed: {e}")


@functools.lru_cache(maxsize=16)
def _boto3_client(endpoint: str | None, region: str | None, env_endpoint: str | None):
    """One boto3 client per endpoint (making one costs far more than a request; clients are
    thread-safe). ``env_endpoint`` is only part of the cache key."""
    try:
        import boto3
    except ImportError as e:
        raise StorageError("committing to S3 needs boto3 for conditional writes; "
                           "pip install 'tessera[s3]'") from e
    kwargs = {}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if region:
        kwargs["region_name"] = region
    return boto3.client("s3", **kwargs)


_GCS_WRITER = "tessera-writer"  # custom metadata: which put_if call wrote this generation
_GCS_DEFAULT_RETRY_S = 120.0  # google-cloud-storage's own default deadline


def _gcs_emulator() -> tuple[str, str] | None:
    """(scheme, host:port) of ``STORAGE_EMULATOR_HOST`` (google-cloud-storage's variable; it
    includes the scheme, which defaults to http here), or None."""
    env = os.environ.get("STORAGE_EMULATOR_HOST")
    if not env:
        return None
    scheme, sep, host = env.partition("://")
    return (scheme, host.rstrip("/")) if sep else ("http", env.rstrip("/"))


def _open_filesystem(uri: str, query: dict[str, list[str]]) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for ``uri``. A ``gs://`` URI without an ``endpoint_override``
    goes to ``STORAGE_EMULATOR_HOST`` when that is set (pyarrow does not read the variable),
    so one setting points reads and conditional puts at the same server."""
    parts = urlsplit(uri)
    emulator = _gcs_emulator()
    if parts.scheme != "gs" or "endpoint_override" in query or emulator is None:
        return pafs.FileSystem.from_uri(uri)
    if set(query) - {"retry_limit_seconds", "location"}:
        return pafs.FileSystem.from_uri(uri)  # pyarrow names the unexpected parameter
    scheme, host = emulator
    kwargs = {}
    if query.get("retry_limit_seconds"):
        kwargs["retry_time_limit"] = timedelta(seconds=float(query["retry_limit_seconds"][0]))
    if query.get("location"):
        kwargs["default_bucket_location"] = query["location"][0]
    fs = pafs.GcsFileSystem(anonymous=True, scheme=scheme, endpoint_override=host, **kwargs)
    return fs, f"{parts.netloc.rpartition('@')[2]}{parts.path}".rstrip("/")


def _gcs_config(uri: str, query: dict[str, list[str]]) -> tuple[str | None, bool, str | None]:
    """(endpoint URL or None, anonymous, STORAGE_EMULATOR_HOST) for the client cache: the
    URI's ``endpoint_override``/``scheme`` and ``anonymous@`` as pyarrow reads them."""
    endpoint = None
    if query.get("endpoint_override"):
        host = query["endpoint_override"][0]
        scheme = (query.get("scheme") or ["https"])[0]
        endpoint = host if "://" in host else f"{scheme}://{host}"
    anonymous = urlsplit(uri).username == "anonymous"
    return endpoint, anonymous, os.environ.get("STORAGE_EMULATOR_HOST")


def _gcs_retry(query: dict[str, list[str]]):
    from google.cloud.storage.retry import DEFAULT_RETRY

    limit = query.get("retry_limit_seconds")
    return DEFAULT_RETRY.with_timeout(float(limit[0]) if limit else _GCS_DEFAULT_RETRY_S)


def _gcs_errors() -> tuple[type[BaseException], ...]:
    """What a GCS call raises when the endpoint fails (not a precondition): API errors, a
    retry deadline passed, a refused or reset connection (requests' errors are OSErrors)."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as gauth

    return (gexc.GoogleAPIError, gauth.TransportError, OSError)


# one client per thread and config: a client's requests session is not documented as
# thread-safe, and making one per call would cost a credentials lookup each time
_gcs_local = threading.local()


def _gcs_client(endpoint: str | None, anonymous: bool, env_emulator: str | None):
    """The google-cloud-storage client for one endpoint (``env_emulator`` is only part of
    the cache key: the client reads ``STORAGE_EMULATOR_HOST`` itself)."""
    key = (endpoint, anonymous, env_emulator)
    clients = _gcs_local.__dict__.setdefault("clients", {})
    if key in clients:
        return clients[key]
    try:
        from google.auth.credentials import AnonymousCredentials
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import storage
    except ImportError as e:
        raise StorageError("committing to GCS needs google-cloud-storage for conditional "
                           "writes; pip install 'tessera[gcs]'") from e
    kwargs: dict = {"project": None}  # object reads and writes need no project
    if endpoint:
        kwargs["client_options"] = {"api_endpoint": endpoint}
    if anonymous:
        kwargs["credentials"] = AnonymousCredentials()
    try:
        client = storage.Client(**kwargs)
    except DefaultCredentialsError as e:
        raise StorageError(
            f"no Google credentials for GCS ({e}); set GOOGLE_APPLICATION_CREDENTIALS or run "
            "'gcloud auth application-default login'; for an emulator set "
            "STORAGE_EMULATOR_HOST=http://host:port or use "
            "gs://anonymous@bucket/prefix?endpoint_override=host:port&scheme=http") from e
    clients[key] = client
    return client
