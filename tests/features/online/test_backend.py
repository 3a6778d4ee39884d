"""One suite against every backend of the online store (one Redis: its transaction and the
per-key scripts; a 3-primary Redis Cluster): the write path, the read path, fence refusals,
watermark calls, the rebuild's writes -- the same observable store on each."""

from __future__ import annotations

import numpy as np
import pytest

from features.online.backend import ScriptBackend, TransactionBackend, open_backend
from features.online.cluster import by_node, primaries
from features.online.layout import APPLIED_FIELD, GENERATION_FIELD, STORE_KEY, Watermark

pytestmark = pytest.mark.integration

FIELDS = ["v@1:1m", "v@1:1h"]
SIZES = [40, 72]


def _batch(n: int, seed: int, prefix: str = "tessera:user"):
    rng = np.random.default_rng(seed)
    keys = [f"{prefix}:u{i}" for i in range(n)]
    rings = [rng.integers(0, 256, size=(n, s), dtype=np.uint8) for s in SIZES]
    present = np.ones((n, len(FIELDS)), dtype=bool)
    present[3, 1] = False  # a key with one ring never reached: that field is not written
    return keys, rings, present


def _commit(backend, keys, rings, present, fences, expected, applied, ttl=3600):
    return backend.commit(keys, FIELDS, rings, present, np.ones(len(keys), dtype=bool), ttl,
                          fences, expected, applied)


def test_write_then_read_the_same_bytes(any_backend):
    b = any_backend
    keys, rings, present = _batch(60, 1)
    wm = {"tessera:offsets:g:t:0": (Watermark(), Watermark(59, 0, 7)),
          "tessera:offsets:g:t:1": (Watermark(), Watermark(-1, 0, 0))}
    applied = [b"0:0:59"] * len(keys)
    assert _commit(b, keys, rings, present, wm, [b""] * len(keys), applied) is None
    got = b.load(keys, [*FIELDS, APPLIED_FIELD])
    for i, row in enumerate(got):
        for j in range(len(FIELDS)):
            want = rings[j][i].tobytes() if present[i, j] else None
            assert row[j] == want, (keys[i], FIELDS[j])
        assert row[-1] == b"0:0:59"
    assert b.read([(keys[5], FIELDS[1:]), (keys[6], FIELDS)]) == [got[5][1:2], got[6][:2]]
    assert b.watermarks(list(wm)) == [Watermark(59, 0, 7), Watermark(-1, 0, 0)]
    assert b.client.hget(STORE_KEY, GENERATION_FIELD) == b.generation.encode()
    assert 3300 < b.client.ttl(keys[0]) <= 3600
    if b.cluster:
        assert len(by_node(b.client, keys)) == 3  # the batch spanned every primary


def test_backends_store_the_same_bytes(redis_url, redis_cluster_url):
    """The transaction and the scripts leave byte-identical hashes and watermarks, on one
    Redis and on the cluster."""
    from features.online.cluster import connect

    dumps = []
    for url, per_key in ((redis_url, False), (redis_url, True), (redis_cluster_url, None)):
        client = connect(url)
        for node in primaries(client):
            node.flushall()
        b = open_backend(client, per_key=per_key)
        keys, rings, present = _batch(40, 2)
        wm = {"tessera:offsets:g:t:0": (Watermark(), Watermark(39, 0, 3))}
        assert _commit(b, keys, rings, present, wm, [b""] * 40, [b"0:0:39"] * 40) is None
        dumps.append(([client.hgetall(k) for k in keys], b.get(list(wm))))
        client.close()
    assert dumps[0] == dumps[1] == dumps[2]


def test_a_moved_watermark_refuses_the_batch(any_backend):
    b = any_backend
    keys, rings, present = _batch(20, 3)
    k0 = "tessera:offsets:g:t:0"
    assert _commit(b, keys, rings, present, {k0: (Watermark(), Watermark(9, 0, 1))},
                   [b""] * 20, [b"0:0:9"] * 20) is None
    other, _, _ = _batch(20, 4)
    b.set_watermarks({k0: Watermark(14, 0, 5)})  # another worker got further
    _, rings2, _ = _batch(20, 5)
    stale = _commit(b, keys, rings2, present, {k0: (Watermark(9, 0, 1), Watermark(19, 0, 2))},
                    [b"0:0:9"] * 20, [b"0:0:19"] * 20)
    assert stale == {k0: Watermark(14, 0, 5)}
    assert b.watermarks([k0]) == [Watermark(14, 0, 5)]  # never moved by the refused batch
    if isinstance(b, TransactionBackend):  # one transaction: nothing of it was written
        assert b.load(keys[:1], FIELDS[:1]) == [[rings[0][0].tobytes()]]


def test_a_key_written_by_another_worker_is_refused(any_backend):
    """The per-key fence: a key whose ~applied is not what the writer expects is not
    overwritten (the scripts); one Redis fences the same batch by its watermarks."""
    b = any_backend
    keys, rings, present = _batch(10, 6)
    k0 = "tessera:offsets:g:t:0"
    assert _commit(b, keys, rings, present, {k0: (Watermark(), Watermark(9, 0, 1))},
                   [b""] * 10, [b"0:0:9"] * 10) is None
    b.client.hset(keys[2], APPLIED_FIELD, b"0:0:12")  # another writer's mark
    _, rings2, _ = _batch(10, 7)
    stale = _commit(b, keys, rings2, present, {k0: (Watermark(0, 0, 1), Watermark(19, 0, 2))},
                    [b"0:0:9"] * 10, [b"0:0:19"] * 10)
    assert stale == {k0: Watermark(9, 0, 1)}  # the watermark is not where this writer thought
    if isinstance(b, ScriptBackend):
        assert b.refused_keys >= 1
        assert b.load([keys[2]], FIELDS[:1]) == [[rings[0][2].tobytes()]]
    stale = _commit(b, keys, rings2, present, {k0: (Watermark(9, 0, 1), Watermark(19, 0, 2))},
                    [b"0:0:9"] * 10, [b"0:0:19"] * 10)
    if isinstance(b, ScriptBackend):  # key 2 refused: the watermark stays
        assert stale == {k0: Watermark(9, 0, 1)}
        assert b.load([keys[2]], [APPLIED_FIELD]) == [[b"0:0:12"]]
    else:  # the watermark fence passed: the transaction wrote every key
        assert stale is None
        assert b.load([keys[2]], [APPLIED_FIELD]) == [[b"0:0:19"]]


def test_watermark_calls_and_scan_span_every_node(any_backend):
    b = any_backend
    marks = {f"tessera:offsets:g:t{i}:{p}": Watermark(i * 10 + p, p % 2, i)
             for i in range(5) for p in range(4)}
    b.set_watermarks(marks)
    assert b.watermarks(list(marks)) == list(marks.values())
    assert b.get(["tessera:offsets:nope:0", *list(marks)[:2]]) == [
        None, *(m.encode() for m in list(marks.values())[:2])]
    b.set_values({"tessera:x:1": b"one", "tessera:x:2": b"two"})
    assert b.get(["tessera:x:2", "tessera:x:1"]) == [b"two", b"one"]
    found = sorted(k.decode() for k in b.scan("tessera:offsets:*"))
    assert found == sorted(marks)
    if b.cluster:
        assert len(by_node(b.client, list(marks))) == 3
    assert b.get([]) == [] and b.watermarks([]) == [] and b.load([], FIELDS) == []


def test_put_rings_is_unfenced_and_clears_applied(any_backend):
    b = any_backend
    keys, rings, present = _batch(12, 8)
    assert _commit(b, keys, rings, present, {}, [b""] * 12, [b"0:0:5"] * 12) is None
    _, rings2, _ = _batch(12, 9)
    assert b.put_rings(keys, FIELDS, rings2, present, 600, clear_applied=True) == 12
    got = b.load(keys, [*FIELDS, APPLIED_FIELD])
    assert [r[0] for r in got] == [rings2[0][i].tobytes() for i in range(12)]
    assert all(r[-1] is None for r in got)
    assert 500 < b.client.ttl(keys[0]) <= 600


def _script_loads(nodes) -> int:
    total = 0
    for node in nodes:
        stats = node.info("commandstats")
        total += stats.get("cmdstat_script|load", {}).get("calls", 0)
    return total


@pytest.mark.parametrize("topology", ["redis_url", "redis_cluster_url"])
def test_scripts_missing_on_a_node_are_loaded_once_per_node(request, topology):
    """A node that lost its scripts (restarted, or new) answers NOSCRIPT to every key of the
    batch: the scripts are loaded once on that node, not once per refused key (a fresh
    cluster's first commit of ~24k keys took 17 s instead of 1.5 s that way)."""
    from features.online.cluster import connect

    client = connect(request.getfixturevalue(topology))
    nodes = primaries(client)
    for node in nodes:
        node.flushall()
        node.script_flush()
        node.config_resetstat()
    b = open_backend(client, per_key=True)
    keys, rings, present = _batch(300, 10)
    fences = {"tessera:offsets:g:t:0": (Watermark(), Watermark(299, 0, 1))}
    assert _commit(b, keys, rings, present, fences, [b""] * 300, [b"0:0:299"] * 300) is None
    # the three scripts, on each node that got keys (every node here), once
    assert _script_loads(nodes) == 3 * len(nodes)
    got = b.load(keys, [APPLIED_FIELD])
    assert all(r[0] == b"0:0:299" for r in got)
    client.close()
