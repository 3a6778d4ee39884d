"""Redis I/O of the worker: pipelined ring loads and the fenced, atomic batch write.

Every write is absolute (whole ring fields, never increments) and lands in one MULTI/EXEC with
the partitions' offset watermarks. The watermarks are WATCHed and compared first: if another
worker advanced one since we loaded our state, nothing is written and the caller reloads.
"""

from __future__ import annotations

from typing import Any

import redis


class RedisSink:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def watermarks(self, keys: list[str]) -> list[int]:
        """Last offset applied per partition key (-1 when none)."""
        return [int(v) if v is not None else -1 for v in self.client.mget(keys)]

    def load(self, keys: list[str], fields: list[str]) -> list[list[bytes | None]]:
        """``HMGET key *fields`` for many keys in one round trip."""
        if not keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for k in keys:
            pipe.hmget(k, fields)
        return pipe.execute()

    def commit(
        self,
        writes: dict[str, dict[str, bytes]],
        ttl_s: int,
        fences: dict[str, tuple[int, int]],
    ) -> dict[str, int] | None:
        """Write ``writes`` (key -> {field: ring}) and set each fence key from its expected to
        its new offset, atomically. Returns None on success, else the current watermarks (some
        other worker moved one; nothing was written)."""
        keys = list(fences)
        with self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(*keys)
                current = [int(v) if v is not None else -1 for v in pipe.mget(keys)]
                if any(c != fences[k][0] for k, c in zip(keys, current, strict=True)):
                    pipe.unwatch()
                    return dict(zip(keys, current, strict=True))
                pipe.multi()
                for key, mapping in writes.items():
                    pipe.hset(key, mapping=mapping)
                    pipe.expire(key, ttl_s)
                for k in keys:
                    pipe.set(k, fences[k][1])
                pipe.execute()
                return None
            except redis.WatchError:
                return dict(zip(keys, self.watermarks(keys), strict=True))


def connect(url: str) -> Any:
    return redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)
