"""A slot migrated mid-test on a real Redis Cluster (``CLUSTER SETSLOT ... MIGRATING/IMPORTING``
and ``MIGRATE``, as ``redis-cli --cluster reshard`` does): while it moves, the backend's writes,
watermark reads and the feature reads follow ``ASK`` to the importing node -- ``ASKING``, then
the command -- without relearning the slot map; once it has moved, ``MOVED`` relearns it."""

from __future__ import annotations

import numpy as np
import pytest
from redis.crc import key_slot

from features.online.backend import open_backend
from features.online.cluster import primaries
from features.online.layout import APPLIED_FIELD, Watermark

pytestmark = pytest.mark.integration

FIELDS = ["v@1:1m"]


class Slot:
    """One slot's migration between two primaries, by the raw commands."""

    def __init__(self, client, slot: int) -> None:
        self.client, self.slot = client, slot
        self.nodes = primaries(client)
        self.ids = {id(n): n.execute_command("CLUSTER MYID") for n in self.nodes}
        self.owner = client.nodes_manager.slots_cache[slot][0].redis_connection

    def node_id(self, node) -> bytes | str:
        return self.ids[id(node)]

    def count(self, node) -> int:
        """Keys of the slot ``node`` holds (its own, whoever owns the slot)."""
        return node.execute_command("CLUSTER COUNTKEYSINSLOT", self.slot)

    def owner_now(self):
        """The primary the cluster's slot map gives the slot to."""
        for start, end, (_, _, node_id, *_), *_ in self.nodes[0].execute_command(
                "CLUSTER SLOTS"):
            if start <= self.slot <= end:
                node_id = node_id.decode() if isinstance(node_id, bytes) else node_id
                return next(n for n in self.nodes if _text(self.node_id(n)) == node_id)
        raise AssertionError(f"no node serves slot {self.slot}")

    def start(self, src, dst) -> None:
        dst.execute_command("CLUSTER SETSLOT", self.slot, "IMPORTING", self.node_id(src))
        src.execute_command("CLUSTER SETSLOT", self.slot, "MIGRATING", self.node_id(dst))

    def migrate_keys(self, src, dst, keys: list[str] | None = None) -> int:
        """MIGRATE ``keys`` (default: every key of the slot on ``src``) to ``dst``."""
        if keys is None:
            keys = src.execute_command("CLUSTER GETKEYSINSLOT", self.slot, 1000)
        if not keys:
            return 0
        kw = dst.connection_pool.connection_kwargs
        src.execute_command("MIGRATE", kw["host"], kw["port"], "", 0, 5000, "KEYS", *keys)
        return len(keys)

    def finish(self, dst) -> None:
        """Give the slot to ``dst`` on every node (the importing one first)."""
        others = [n for n in self.nodes if n is not dst]
        for node in [dst, *others]:
            node.execute_command("CLUSTER SETSLOT", self.slot, "NODE", self.node_id(dst))

    def move(self, src, dst) -> None:
        self.start(src, dst)
        self.migrate_keys(src, dst)
        self.finish(dst)


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _rings(n: int, seed: int) -> list[np.ndarray]:
    return [np.random.default_rng(seed).integers(0, 256, size=(n, 48), dtype=np.uint8)]


def test_writes_and_reads_follow_ask_while_a_slot_migrates(cluster_client, monkeypatch):
    client = cluster_client
    # two entity keys and a watermark key in one slot (a hash tag), and keys elsewhere
    moving = ["tessera:user:{m}a", "tessera:user:{m}b"]
    wm_key = "tessera:offsets:g:{m}:0"
    slot = key_slot(moving[0].encode())
    assert key_slot(wm_key.encode()) == slot
    others = [f"tessera:user:o{i}" for i in range(30)]
    keys = moving + others
    backend = open_backend(client)
    n = len(keys)
    ones = np.ones((n, 1), dtype=bool)
    exp = np.zeros(n, dtype=bool)
    assert backend.commit(keys, FIELDS, _rings(n, 1), ones, exp, 3600,
                          {wm_key: (Watermark(), Watermark(9, 0, 1))}, [b""] * n,
                          [b"0:0:9"] * n) is None

    mig = Slot(client, slot)
    src = mig.owner
    dst = next(node for node in mig.nodes if node is not src)
    relearned: list[int] = []
    real_init = client.nodes_manager.initialize
    monkeypatch.setattr(client.nodes_manager, "initialize",
                        lambda *a, **k: (relearned.append(1), real_init(*a, **k))[1])
    mig.start(src, dst)
    restore = True
    try:
        # one key of the slot moved, one still on the source: the source answers ASK for
        # the moved one (and for the watermark once it moved); the target, after ASKING
        mig.migrate_keys(src, dst, [moving[0], wm_key])
        assert mig.count(src) == 1 and mig.count(dst) == 2
        rings = _rings(n, 2)
        stale = backend.commit(keys, FIELDS, rings, ones, exp, 3600,
                               {wm_key: (Watermark(9, 0, 1), Watermark(19, 0, 2))},
                               [b"0:0:9"] * n, [b"0:0:19"] * n)
        assert stale is None
        assert backend.watermarks([wm_key]) == [Watermark(19, 0, 2)]
        want = [[rings[0][i].tobytes(), b"0:0:19"] for i in range(n)]
        assert backend.load(keys, [*FIELDS, APPLIED_FIELD]) == want  # the worker's read
        reader = open_backend(client, spin_us=200.0)  # the scorer's read path
        assert reader.read([(k, FIELDS) for k in keys]) == [w[:1] for w in want]
        assert mig.count(src) == 1 and mig.count(dst) == 2  # written where each one lives
        assert relearned == [], "ASK must not relearn the slot map"
        assert client.nodes_manager.slots_cache[slot][0].redis_connection is src

        mig.migrate_keys(src, dst)
        mig.finish(dst)  # the slot is dst's: the source now answers MOVED
        rings = _rings(n, 3)
        assert backend.commit(keys, FIELDS, rings, ones, exp, 3600,
                              {wm_key: (Watermark(19, 0, 2), Watermark(29, 0, 3))},
                              [b"0:0:19"] * n, [b"0:0:29"] * n) is None
        assert relearned, "MOVED relearns the slot map"
        assert client.nodes_manager.slots_cache[slot][0].redis_connection is dst
        assert reader.read([(k, FIELDS) for k in moving]) == [
            [rings[0][0].tobytes()], [rings[0][1].tobytes()]]
        mig.move(dst, src)  # back where it was, for the tests after this one
        restore = False
    finally:
        if restore:
            for node in (src, dst):
                node.execute_command("CLUSTER SETSLOT", slot, "STABLE")
            owner = mig.owner_now()
            if owner is not src:
                mig.move(owner, src)
