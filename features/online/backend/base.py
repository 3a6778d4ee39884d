"""What every online-store backend does: the read path, unfenced writes, watermark calls.

A backend is chosen once, from the client, by ``open_backend``: ``TransactionBackend`` on one
Redis, ``ScriptBackend`` on a Redis Cluster. They differ only in the fenced write
(``commit``); reads, watermarks and the rebuild's writes are these, on either topology, with one
round trip per node touched.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from features.online.backend import exchange
from features.online.backend.resp import bulk, ring_commands
from features.online.backend.scripts import load_scripts, sha
from features.online.cluster import is_cluster, primaries
from features.online.hmget import HashReads
from features.online.layout import Watermark

Fences = dict[str, tuple[Watermark, Watermark]]  # watermark key -> (expected, new)


class OnlineBackend(ABC):
    """The online store's Redis, behind the calls the worker, the reader and the tools make.

    Read path: ``read`` (``HMGET`` of many keys: the scorer's features, the worker's rings),
    ``get`` (plain values: watermarks), ``scan``. Write path: ``commit`` (a batch's rings, each
    key fenced by its ``~applied``, then the watermarks), ``put_rings`` (a rebuild's absolute
    rings), ``set_values``/``set_watermarks`` (unconditional)."""

    per_key = True  # whether ``commit`` fences each key with the WRITE script

    def __init__(self, client: Any, spin_us: float = 0.0) -> None:
        """``spin_us``: how long a read busy-polls for its reply (``features.online.hmget``;
        the worker, not latency-bound per call, does not poll)."""
        self.client = client
        self.cluster = is_cluster(client)
        self.generation = uuid.uuid4().hex[:16]  # this process's mark on the store
        self.reads = HashReads(client, spin_us=spin_us)
        self.refused_keys = 0  # keys a fenced write refused (another writer, or gone)

    # -- read path -------------------------------------------------------------------------

    def read(self, requests: list[tuple[str, list[str]]]) -> list[list[bytes | None]]:
        """``HMGET key *fields`` per request, one round trip per node."""
        return self.reads.fetch(requests)

    def load(self, keys: list[str], fields: list[str]) -> list[list[bytes | None]]:
        """The same ``fields`` of many keys (the worker's ring loads)."""
        if not keys:
            return []
        return self.reads.fetch([(k, fields) for k in keys])

    def get(self, keys: list[str]) -> list[bytes | None]:
        """``GET`` of many keys: one ``MGET`` on one Redis; on a cluster, where ``MGET`` of
        keys in different slots is refused, one buffer of ``GET``s per node."""
        if not keys:
            return []
        if not self.cluster:
            return self.client.mget(keys)
        cmds = [exchange.pack(("GET", k)) for k in keys]
        replies = self._per_key([k.encode() for k in keys], lambda ix: ([cmds[i] for i in ix],
                                                                       list(ix)))
        _raise_errors(replies)
        return replies

    def watermarks(self, keys: list[str]) -> list[Watermark | None]:
        """The stored watermark per partition key (None when absent)."""
        return [Watermark.decode(v) for v in self.get(keys)]

    def scan(self, match: str) -> list[bytes]:
        """Every key matching ``match``, from every primary."""
        return [k for node in primaries(self.client)
                for k in node.scan_iter(match=match, count=1000)]

    # -- write path ------------------------------------------------------------------------

    @abstractmethod
    def commit(self, keys: list[str], fields: list[str], rings: list[np.ndarray],
               present: np.ndarray, expire: np.ndarray, ttl_s: int, fences: Fences,
               expected: list[bytes], applied: list[bytes]) -> dict[str, Watermark | None] | None:
        """Write each key's rings (``rings[j][i]``: key i's ring of ``fields[j]`` as a uint8
        row, written where ``present[i, j]``) if its ``~applied`` is still ``expected[i]``,
        setting it to ``applied[i]`` (and the TTL where ``expire[i]``); then, if every key was
        accepted, move each fence key from its expected to its new watermark and mark the
        store as written (its generation). Returns None on success, else the current
        watermarks (another worker wrote a key or moved a watermark, or Redis lost them)."""

    def set_values(self, values: dict[str, bytes]) -> None:
        """``SET`` many keys unconditionally (``MSET``; per node on a cluster)."""
        if not values:
            return
        if not self.cluster:
            self.client.mset(values)
            return
        keys = list(values)
        cmds = [exchange.pack(("SET", k, values[k])) for k in keys]
        _raise_errors(self._per_key([k.encode() for k in keys],
                                    lambda ix: ([cmds[i] for i in ix], list(ix))))

    def set_watermarks(self, marks: dict[str, Watermark]) -> None:
        """Set watermarks unconditionally (after a rebuild or at a new log epoch)."""
        self.set_values({k: m.encode() for k, m in marks.items()})

    def put_rings(self, keys: list[str], fields: list[str], rings: list[np.ndarray],
                  present: np.ndarray, ttl_s: int, clear_applied: bool) -> int:
        """``HSET`` each key's present rings and ``EXPIRE`` it, one script call per key,
        unfenced (a rebuild's absolute writes); ``clear_applied``: drop the keys' ``~applied``
        (their rings now hold what the log holds, no more). Returns keys written."""
        kb = [k.encode() for k in keys]
        fb = [f.encode() for f in fields]
        head = bulk(b"EVALSHA") + bulk(sha("put")) + bulk(b"1")
        tail = bulk(b"1" if clear_applied else b"0") + bulk(b"%d" % ttl_s)
        heads = [head + bulk(k) + tail for k in kb]
        replies = self._per_key(kb, ring_packer(heads, 6, fb, rings, present))
        _raise_errors(replies)
        return sum(1 for r in replies if r is not None)

    def _per_key(self, keys: list[bytes], pack_keys: exchange.Packer) -> list:
        return exchange.per_key(self.client, keys, pack_keys, load_scripts)


def ring_packer(heads: list[bytes], head_args: int, fields: list[bytes],
                rings: list[np.ndarray], present: np.ndarray) -> exchange.Packer:
    """``pack_keys`` for ``exchange.per_key`` over ring-writing commands (``ring_commands``)
    of the keys at the indices asked for."""
    n = len(heads)

    def pack(ix: list[int]) -> tuple[list, list[int]]:
        if len(ix) == n:
            return ring_commands(heads, head_args, fields, rings, present)
        sel = np.asarray(ix, dtype=np.int64)
        cmds, which = ring_commands([heads[i] for i in ix], head_args, fields,
                                    [r[sel] for r in rings], present[sel])
        return cmds, [ix[w] for w in which]

    return pack


def _raise_errors(replies: list) -> None:
    for r in replies:
        if isinstance(r, Exception):
            raise r
