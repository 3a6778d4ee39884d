"""One Redis: a batch's effects in one ``MULTI/EXEC``, fenced by ``WATCH`` of its watermarks.

Every key can share a transaction here, so the fence is the watermarks alone: the rings go in
as plain ``HSET``s that also set each key's ``~applied`` (the same bytes the cluster's scripts
store), which costs Redis a third to a half of the per-key scripts (``bench/redis_write.py``).
"""

from __future__ import annotations

import numpy as np

from features.online.backend.base import Fences, OnlineBackend
from features.online.backend.exchange import connection, pack, send
from features.online.backend.resp import bulk, ring_commands
from features.online.layout import APPLIED_FIELD, GENERATION_FIELD, STORE_KEY, Watermark


class TransactionBackend(OnlineBackend):
    """The backend of one Redis (``open_backend`` picks it for a ``redis.Redis``)."""

    per_key = False

    def commit(self, keys: list[str], fields: list[str], rings: list[np.ndarray],
               present: np.ndarray, expire: np.ndarray, ttl_s: int, fences: Fences,
               expected: list[bytes], applied: list[bytes]) -> dict[str, Watermark | None] | None:
        """``OnlineBackend.commit`` in one transaction: ``WATCH`` and ``MGET`` the
        watermarks; if one is not what the writer expects, refuse; else ``MULTI``, the rings
        with their ``~applied``, the TTLs, the new watermarks and the generation, ``EXEC``
        (which refuses too if a watched watermark moved meanwhile). ``expected`` is not
        needed: the watermarks fence every key of their partitions."""
        fkeys = list(fences)
        kb = [k.encode() for k in keys]
        with connection(self.client) as conn:
            if fkeys:
                _, raw = send(conn, [pack(("WATCH", *fkeys)), pack(("MGET", *fkeys))], 2)
                current = [Watermark.decode(v) for v in raw]
                if any(not _same(c, fences[k][0]) for k, c in zip(fkeys, current, strict=True)):
                    send(conn, [pack(("UNWATCH",))], 1)
                    return dict(zip(fkeys, current, strict=True))
            head = bulk(b"HSET")
            mark = bulk(APPLIED_FIELD.encode())
            heads = [head + bulk(k) + mark + bulk(a) for k, a in zip(kb, applied, strict=True)]
            cmds: list = [pack(("MULTI",))]
            hsets, which = ring_commands(heads, 4, [f.encode() for f in fields], rings, present)
            cmds += hsets
            due = [kb[i] for i in np.nonzero(expire)[0].tolist()]
            cmds += [pack(("EXPIRE", key, ttl_s)) for key in due]
            cmds += [pack(("SET", k, fences[k][1].encode())) for k in fkeys]
            cmds.append(pack(("HSET", STORE_KEY, GENERATION_FIELD, self.generation)))
            cmds.append(pack(("EXEC",)))
            replies = send(conn, cmds, 3 + len(which) + len(due) + len(fkeys))
        errors = [r for r in replies if isinstance(r, Exception)]
        errors += [r for r in replies[-1] or () if isinstance(r, Exception)]
        if errors:
            raise errors[0]
        if replies[-1] is None:  # a watched watermark moved between MGET and EXEC
            return dict(zip(fkeys, self.watermarks(fkeys), strict=True))
        return None


def _same(current: Watermark | None, expected: Watermark) -> bool:
    if current is None:
        return expected.offset < 0 and expected.epoch == 0
    return (current.offset, current.epoch) == (expected.offset, expected.epoch)
