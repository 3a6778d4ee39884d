"""The conditional put on a real GCS-protocol server (fake-gcs-server, from
``tests/conftest.py::gcs_bucket``): create only if absent, replace only the generation read,
a stale generation refused; two processes racing on one manifest, exactly one winning each
round and the loser's retry landing on top; a retried upload that meets its own earlier write
counts as committed; the server named in the URI as pyarrow spells it. The commit protocol
(``ManifestLog``) on ``gs://`` is tested with S3's in ``test_event_log_object_store.py``."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage import Blob

from features.offline.storage import Store

pytestmark = pytest.mark.integration


@pytest.fixture
def gs_root(gcs_bucket) -> str:
    _, bucket = gcs_bucket
    return f"gs://{bucket}/{uuid.uuid4().hex[:8]}"


def test_put_if_creates_replaces_and_refuses_a_stale_generation(gs_root):
    store = Store(gs_root)
    assert store.read_versioned("m/_manifest.json") == (None, None)
    assert store.put_if("m/_manifest.json", b"one", None)
    assert not store.put_if("m/_manifest.json", b"again", None)  # exists: create refused
    data, gen1 = store.read_versioned("m/_manifest.json")
    assert data == b"one" and gen1.isdigit()
    assert store.put_if("m/_manifest.json", b"two", gen1)
    data, gen2 = store.read_versioned("m/_manifest.json")
    assert data == b"two" and gen2 != gen1
    assert not store.put_if("m/_manifest.json", b"stale", gen1)  # 412: another writer won
    assert store.read_versioned("m/_manifest.json") == (b"two", gen2)
    # what pyarrow reads and lists is what the conditional puts wrote
    assert store.read_bytes("m/_manifest.json") == b"two"
    assert store.list_dir("") == ["m"] and store.list_dir("m") == ["_manifest.json"]
    store.delete("m/_manifest.json")
    assert store.read_versioned("m/_manifest.json") == (None, None)
    assert store.put_if("m/_manifest.json", b"three", None)  # absent again: created


def _racer(root: str, name: str, rounds: int, barrier, results) -> None:
    """One writer process: each round, read the manifest, wait for the other, swap in its
    item; on a lost race, read again and swap on top."""
    store = Store(root)
    for r in range(rounds):
        data, version = store.read_versioned("_manifest.json")
        barrier.wait(30)  # both hold the same generation now
        items = json.loads(data)["items"]
        won = store.put_if("_manifest.json", json.dumps({"items": [*items, f"{name}{r}"]})
                           .encode(), version)
        results.put((r, name, won))
        while not won:
            data, version = store.read_versioned("_manifest.json")
            items = json.loads(data)["items"]
            won = store.put_if("_manifest.json", json.dumps(
                {"items": [*items, f"{name}{r}"]}).encode(), version)
        barrier.wait(30)  # the round is over for both


def test_two_processes_racing_on_one_manifest_one_wins_each_round_and_none_is_lost(gs_root):
    store = Store(gs_root)
    assert store.put_if("_manifest.json", json.dumps({"items": []}).encode(), None)
    ctx = multiprocessing.get_context("spawn")  # fresh clients, no sockets shared by fork
    barrier, results, rounds = ctx.Barrier(2), ctx.Queue(), 6
    procs = [ctx.Process(target=_racer, args=(gs_root, n, rounds, barrier, results))
             for n in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(90)
    assert [p.exitcode for p in procs] == [0, 0]
    firsts = [results.get(timeout=5) for _ in range(2 * rounds)]
    for r in range(rounds):  # the first try of each round: exactly one of the two won
        assert sorted(won for rr, _, won in firsts if rr == r) == [False, True]
    items = json.loads(store.read_versioned("_manifest.json")[0])["items"]
    assert sorted(items) == sorted(f"{n}{r}" for n in "ab" for r in range(rounds))


def test_a_retry_that_meets_its_own_write_has_committed(gs_root, monkeypatch):
    """The response to a conditional upload is lost and the client retries it: the retry
    gets 412 from the write that did land. The writer token in the object's metadata tells
    put_if the write was its own (a commit, not a lost race), and another writer's is not."""
    store = Store(gs_root)
    assert store.put_if("_manifest.json", b"v1", None)
    _, gen = store.read_versioned("_manifest.json")
    real = Blob.upload_from_string

    def lands_then_retried(self, *args, **kwargs):
        real(self, *args, **kwargs)  # lands; the retry below is the one that answers
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Blob, "upload_from_string", lands_then_retried)
    assert store.put_if("_manifest.json", b"v2", gen)
    monkeypatch.setattr(Blob, "upload_from_string", real)
    assert store.read_versioned("_manifest.json")[0] == b"v2"
    # the same bytes from another writer at the old generation are still a lost race
    assert not store.put_if("_manifest.json", b"v2", gen)


def test_endpoint_in_the_uri_and_an_unreachable_store_is_an_oserror(gcs_bucket, monkeypatch):
    """Without STORAGE_EMULATOR_HOST, the URI names the server as pyarrow reads it
    (``anonymous@`` and ``?endpoint_override=&scheme=http``), for pyarrow and the conditional
    put alike; an endpoint that cannot be reached raises OSError once ``retry_limit_seconds``
    has passed, which the worker's offline writer retries with backoff."""
    url, bucket = gcs_bucket
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    host = url.split("://", 1)[1]
    root = f"gs://anonymous@{bucket}/{uuid.uuid4().hex[:8]}?endpoint_override={host}&scheme=http"
    store = Store(root)
    assert store.put_if("x/_manifest.json", b"1", None)
    assert store.read_bytes("x/_manifest.json") == b"1"  # through pyarrow
    key = f"{store.root.split('/', 1)[1]}/x/_manifest.json"  # and on the server itself
    client = storage.Client(client_options={"api_endpoint": url},
                            credentials=AnonymousCredentials(), project=None)
    assert client.bucket(bucket).blob(key).download_as_bytes() == b"1"
    dead = Store(f"gs://anonymous@{bucket}/x?endpoint_override=127.0.0.1:9&scheme=http"
                 "&retry_limit_seconds=1")
    started = time.monotonic()
    with pytest.raises(OSError, match="GCS GET"):
        dead.read_versioned("_manifest.json")
    with pytest.raises(OSError, match="GCS PUT"):
        dead.put_if("_manifest.json", b"1", "5")
    assert time.monotonic() - started < 20


def test_without_google_cloud_storage_a_commit_names_the_extra(gs_root):
    """Reading and writing through pyarrow need nothing more; committing does, and says so."""
    code = f"""
import sys
sys.modules["google.cloud.storage"] = None  # as if 'tessera[gcs]' were not installed
from features.offline.storage import StorageError, Store
store = Store({gs_root!r})
store.write_bytes("plain", b"x")
assert store.read_bytes("plain") == b"x"
try:
    store.put_if("_manifest.json", b"1", None)
except StorageError as e:
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert "pip install 'tessera[gcs]'" in out.stdout, out.stderr
