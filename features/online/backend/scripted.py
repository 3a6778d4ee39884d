"""A Redis Cluster: each key's write fenced by a script in its own slot, then the watermarks.

No write spans two keys, so the commands work where the keys of one batch live in different
slots and no transaction can span them. Each entity hash carries ``~applied``
(``features.online.layout.APPLIED_FIELD``), the offsets of its home partition's streams its
rings hold, and a batch writes each key with the ``WRITE`` script (``scripts.py``): a key's
write is atomic and idempotent on its own, and a writer holding stale rings of a key (another
worker wrote it meanwhile) is refused for that key.

Only when every key of a batch was accepted do the partitions' watermarks move, each with its
own compare-and-set script (``ADVANCE``): a watermark covers only offsets whose effects are in
every key. A crash between the two leaves keys ahead of their watermark; the replay skips their
events by the keys' ``~applied`` (``streams.worker.online.OnlineWriter``).

Two round trips per batch, each one buffer per node touched (``exchange.per_key``).
"""

from __future__ import annotations

import logging

import numpy as np

from features.online.backend.base import Fences, OnlineBackend, ring_packer
from features.online.backend.exchange import pack
from features.online.backend.resp import bulk
from features.online.backend.scripts import sha
from features.online.layout import GENERATION_FIELD, STORE_KEY, Watermark

log = logging.getLogger("tessera.worker")


class ScriptBackend(OnlineBackend):
    """The backend of a Redis Cluster (``open_backend`` picks it for a ``RedisCluster``; it
    runs on one Redis too, ``open_backend(client, per_key=True)``)."""

    per_key = True

    def commit(self, keys: list[str], fields: list[str], rings: list[np.ndarray],
               present: np.ndarray, expire: np.ndarray, ttl_s: int, fences: Fences,
               expected: list[bytes], applied: list[bytes]) -> dict[str, Watermark | None] | None:
        fkeys = list(fences)
        kb = [k.encode() for k in keys]
        if kb:
            ttl = bulk(b"%d" % ttl_s)
            zero = bulk(b"0")
            head0 = bulk(b"EVALSHA") + bulk(sha("write")) + bulk(b"1")
            heads = [head0 + bulk(k) + bulk(e) + bulk(a) + (ttl if x else zero)
                     for k, e, a, x in zip(kb, expected, applied, expire.tolist(), strict=True)]
            fb = [f.encode() for f in fields]
            replies = self._per_key(kb, ring_packer(heads, 7, fb, rings, present))
            _raise_errors(replies)
            refused = [i for i, r in enumerate(replies) if isinstance(r, list)]
            if refused:
                self.refused_keys += len(refused)
                gone = sum(1 for i in refused if not replies[i][0] and expected[i])
                if gone:
                    log.warning("%d of %d keys a write expected were gone from Redis (expired, "
                                "flushed, or a node restarted empty)", gone, len(refused))
                return dict(zip(fkeys, self.watermarks(fkeys), strict=True))
        # every key holds its new rings: the watermarks may move
        advance = sha("advance")
        routing = [k.encode() for k in fkeys] + [STORE_KEY.encode()]
        cmds_of = [pack(("EVALSHA", advance, 1, k, b"%d:%d" % (fences[k][0].offset,
                                                                fences[k][0].epoch),
                         fences[k][1].encode())) for k in fkeys]
        cmds_of.append(pack(("HSET", STORE_KEY, GENERATION_FIELD, self.generation)))
        replies = self._per_key(routing, lambda ix: ([cmds_of[i] for i in ix], list(ix)))
        _raise_errors(replies)
        if any(isinstance(r, list) for r in replies[:-1]):
            return dict(zip(fkeys, self.watermarks(fkeys), strict=True))
        return None


def _raise_errors(replies: list) -> None:
    for r in replies:
        if isinstance(r, Exception):
            raise r
