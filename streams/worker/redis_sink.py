"""Redis I/O of the worker: batch ring loads and the fenced, atomic batch write.

Every write is absolute (whole ring fields, never increments) and lands in one MULTI/EXEC with
the partitions' offset watermarks. The watermarks are WATCHed and compared first: if another
worker advanced one since we loaded our state, nothing is written and the caller reloads.

A batch writes one ``HSET`` per touched entity. redis-py's pipeline costs about 10 µs of Python
per command — more than folding the event — so the commands are packed with hiredis (redis-py's
own C serializer) and sent on one of the client's pooled connections as a single buffer; the
replies are read back with the connection's parser. ``HSET`` keeps a key's TTL, so ``EXPIRE`` is
sent only for entities whose expiry is due (the caller decides).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import hiredis
import numpy as np
import redis

from features.online.hmget import HashReads
from features.online.layout import GENERATION_FIELD, STORE_KEY, Watermark
from streams.worker.resp import hset_commands

_pack = hiredis.pack_command


class RedisSink:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.generation = uuid.uuid4().hex[:16]  # this worker process's mark in STORE_KEY
        self._reads = HashReads(client, spin_us=0)

    def watermarks(self, keys: list[str]) -> list[Watermark | None]:
        """The stored watermark per partition key (None when absent)."""
        return [Watermark.decode(v) for v in self.client.mget(keys)]

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled connection; dropped (not reused) if anything fails on it mid-exchange."""
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            yield conn
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    @staticmethod
    def _send(conn, commands: list[bytes], n_replies: int) -> list:
        """Send packed commands as one buffer; read ``n_replies`` (error replies as values)."""
        conn.send_packed_command([b"".join(commands)])
        out = []
        for _ in range(n_replies):
            try:
                out.append(conn.read_response())
            except redis.ResponseError as e:
                out.append(e)
        return out

    def load(self, keys: list[str], fields: list[str]) -> list[list[bytes | None]]:
        """``HMGET key *fields`` for many keys in one round trip (the online store's reader,
        without its busy-poll: the worker is not latency-bound per call)."""
        if not keys:
            return []
        return self._reads.fetch([(k, fields) for k in keys])

    def commit(
        self,
        keys: list[str],
        fields: list[str],
        rings: list[np.ndarray],
        present: np.ndarray,
        expire: list[str],
        ttl_s: int,
        fences: dict[str, tuple[Watermark, Watermark]],
    ) -> dict[str, Watermark | None] | None:
        """``HSET`` each key's rings (``rings[j][i]``: key i's ring of ``fields[j]`` as a uint8
        row, written where ``present[i, j]``), ``EXPIRE`` the keys in ``expire`` and move each
        fence key from its expected to its new watermark, atomically, and mark the store as
        written (its generation). Returns None on success, else the current watermarks
        (another worker moved one, or Redis lost them; nothing was written)."""
        fkeys = list(fences)
        with self._connection() as conn:
            _, raw = self._send(conn, [_pack(("WATCH", *fkeys)), _pack(("MGET", *fkeys))], 2)
            current = [Watermark.decode(v) for v in raw]
            if any(not _same(c, fences[k][0]) for k, c in zip(fkeys, current, strict=True)):
                self._send(conn, [_pack(("UNWATCH",))], 1)
                return dict(zip(fkeys, current, strict=True))
            cmds: list = [_pack(("MULTI",))]
            cmds += hset_commands([k.encode() for k in keys], [f.encode() for f in fields],
                                  rings, present)
            n_hset = int(present.any(axis=1).sum())
            cmds += [_pack(("EXPIRE", key, ttl_s)) for key in expire]
            cmds += [_pack(("SET", k, fences[k][1].encode())) for k in fkeys]
            cmds.append(_pack(("HSET", STORE_KEY, GENERATION_FIELD, self.generation)))
            cmds.append(_pack(("EXEC",)))
            replies = self._send(conn, cmds, 3 + n_hset + len(expire) + len(fkeys))
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


def connect(url: str) -> Any:
    return redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)
