"""Redis I/O of the worker: batch ring loads and the fenced batch write, per key.

No write spans two keys, so the same commands work on one Redis and on a Redis Cluster (where
keys of one batch live in different slots and no transaction can span them). The fence lives
in every key's own slot instead: each entity hash carries ``~applied``
(``features.online.layout.APPLIED_FIELD``), the offsets of its home partition's streams its
rings hold, and a batch writes each key with one server-side script, ``_WRITE``: *if the
key's ``~applied`` is still what this worker read or last wrote, set the rings and the new
``~applied`` (and the TTL); else write nothing and answer the current value*. A key's write is
atomic and idempotent on its own, and a writer holding stale rings of a key (another worker
wrote it meanwhile) is refused for that key.

Only when every key of a batch was accepted do the partitions' watermarks move, each with its
own compare-and-set script (``_ADVANCE``): a watermark covers only offsets whose effects are
in every key. A crash between the two leaves keys ahead of their watermark; the replay skips
their events by the keys' ``~applied`` (``online.OnlineWriter``).

Two round trips per batch, each one pipelined buffer per node touched, sent to every node
before any reply is read. On one Redis, where a transaction may span every key, the same
effects (rings, ``~applied``, watermarks) go in one ``MULTI/EXEC`` fenced by ``WATCH`` of the
watermarks instead (``_commit_transaction``): the scripts cost Redis 2-3x the time of plain
``HSET``s (``bench/redis_write.py``), and the stores are the same bytes either way.

redis-py's pipeline costs about 10 µs of Python per command — more than folding the event —
so commands are packed by ``resp.ring_commands`` (a numpy matrix per command shape) and
written on connections borrowed from each node's pool.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import hiredis
import numpy as np
import redis
import redis.exceptions as rexc

from features.online.cluster import by_node, is_cluster, refresh
from features.online.connection import RedisTransport
from features.online.connection import connect as connect_url
from features.online.hmget import HashReads
from features.online.layout import APPLIED_FIELD, GENERATION_FIELD, STORE_KEY, Watermark
from streams.worker.resp import bulk, ring_commands

log = logging.getLogger("tessera.worker")
_pack = hiredis.pack_command

# KEYS[1] entity hash; ARGV: expected ~applied ('' = none), new ~applied, TTL s (0: keep),
# then field, ring, ... -> 1, or {current ~applied} when refused (nothing written)
_WRITE = f"""
local cur = redis.call('HGET', KEYS[1], '{APPLIED_FIELD}') or ''
if cur ~= ARGV[1] then return {{cur}} end
redis.call('HSET', KEYS[1], '{APPLIED_FIELD}', ARGV[2], unpack(ARGV, 4))
if ARGV[3] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
"""
# KEYS[1] an offset key; ARGV: expected 'offset:epoch' (absent counts as '-1:0'), new value
# -> 1, or {current value} / {} (absent) when refused
_ADVANCE = """
local cur = redis.call('GET', KEYS[1])
local seen = '-1:0'
if cur then
  local o, e = string.match(cur, '^(%-?%d+):?(%d*)')
  if e == nil or e == '' then e = '0' end
  seen = (o or '') .. ':' .. e
end
if seen ~= ARGV[1] then
  if cur then return {cur} end
  return {}
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""
# KEYS[1] entity hash; ARGV: '1' to clear ~applied (a rebuild from the log), TTL s, then
# field, ring, ... -> 1 (the rebuild's writes: absolute, unfenced)
_PUT = f"""
if ARGV[1] == '1' then redis.call('HDEL', KEYS[1], '{APPLIED_FIELD}') end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
_SCRIPTS = {name: (text, hashlib.sha1(text.encode()).hexdigest().encode())
            for name, text in (("write", _WRITE), ("advance", _ADVANCE), ("put", _PUT))}
# replies to commands that did not run: sent again (after relearning the slot map / loading
# the scripts); ASK (a slot being migrated) is waited out the same way
_RETRY = (rexc.AskError, rexc.TryAgainError, rexc.NoScriptError, rexc.ClusterDownError)
_ATTEMPTS = 5


class RedisSink:
    def __init__(self, client: redis.Redis | Any, per_key: bool | None = None) -> None:
        """``per_key``: write with the per-key scripts (default: on a cluster only; one Redis
        takes the same effects in one transaction, ``_commit_transaction``)."""
        self.client = client
        self.cluster = is_cluster(client)
        self.per_key = self.cluster if per_key is None else per_key
        self.generation = uuid.uuid4().hex[:16]  # this process's mark
        self._reads = HashReads(client, spin_us=0)
        self.refused_keys = 0  # keys a fenced write refused (another writer, or gone)

    # -- reads -----------------------------------------------------------------------------

    def watermarks(self, keys: list[str]) -> list[Watermark | None]:
        """The stored watermark per partition key (None when absent)."""
        if not keys:
            return []
        raw = self.client.mget_nonatomic(keys) if self.cluster else self.client.mget(keys)
        return [Watermark.decode(v) for v in raw]

    def set_watermarks(self, marks: dict[str, Watermark]) -> None:
        """Set watermarks unconditionally (after a rebuild or at a new log epoch)."""
        if not marks:
            return
        values = {k: m.encode() for k, m in marks.items()}
        if self.cluster:
            self.client.mset_nonatomic(values)
        else:
            self.client.mset(values)

    def load(self, keys: list[str], fields: list[str]) -> list[list[bytes | None]]:
        """``HMGET key *fields`` for many keys in one round trip per node (the online store's
        reader, without its busy-poll: the worker is not latency-bound per call)."""
        if not keys:
            return []
        return self._reads.fetch([(k, fields) for k in keys])

    # -- the exchange ----------------------------------------------------------------------

    @contextmanager
    def _connection(self, node: Any = None) -> Iterator[Any]:
        """A pooled connection (of ``node``, a cluster node's client; default: ours); dropped
        (not reused) if anything fails on it mid-exchange."""
        pool = (self.client if node is None else node).connection_pool
        conn = pool.get_connection()
        try:
            yield conn
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    @staticmethod
    def _send(conn, commands: list, n_replies: int) -> list:
        """Send packed commands as one buffer; read ``n_replies`` (error replies as values)."""
        conn.send_packed_command([b"".join(commands)])
        return [_read(conn) for _ in range(n_replies)]

    def _exchange(self, jobs: list[tuple[Any, list, int]]) -> list[list]:
        """``[(node client, packed commands, replies)]``: send every node its buffer, then
        read each node's replies (the nodes work in parallel)."""
        if len(jobs) == 1:
            node, cmds, n = jobs[0]
            with self._connection(node) as conn:
                return [self._send(conn, cmds, n)]
        pools = [node.connection_pool for node, _, _ in jobs]
        conns = [p.get_connection() for p in pools]
        try:
            for conn, (_, cmds, _) in zip(conns, jobs, strict=True):
                conn.send_packed_command([b"".join(cmds)])
            return [[_read(conn) for _ in range(n)]
                    for conn, (_, _, n) in zip(conns, jobs, strict=True)]
        except BaseException:
            for conn in conns:
                conn.disconnect()
            raise
        finally:
            for pool, conn in zip(pools, conns, strict=True):
                pool.release(conn)

    def _per_key(self, keys: list[bytes], pack: Any) -> list:
        """One command per key (``pack(indices) -> (buffers, index per command)``), grouped by
        node, one exchange; commands answered MOVED/ASK/TRYAGAIN/NOSCRIPT (not run) are sent
        again after relearning the slot map or loading the scripts. Returns each key's reply
        (None: no command)."""
        out: list = [None] * len(keys)
        todo = list(range(len(keys)))
        for attempt in range(_ATTEMPTS):
            groups = by_node(self.client, [keys[i] for i in todo])
            jobs, order = [], []
            for node, gix in groups:
                ix = todo if len(groups) == 1 else [todo[g] for g in gix]
                cmds, which = pack(ix)
                if which:
                    jobs.append((node, cmds, len(which)))
                    order.append(which)
            if not jobs:
                return out
            again: list[int] = []
            for (node, _, _), which, replies in zip(jobs, order, self._exchange(jobs),
                                                    strict=True):
                for i, r in zip(which, replies, strict=True):
                    if isinstance(r, _RETRY):
                        if isinstance(r, rexc.NoScriptError):
                            _load_scripts(node)
                        again.append(i)
                        if attempt == _ATTEMPTS - 1:
                            raise r
                    else:
                        out[i] = r
            if not again:
                return out
            refresh(self.client)
            if attempt:
                time.sleep(0.05 * attempt)  # a slot in migration or a failover under way
            todo = sorted(again)
        return out

    # -- writes ----------------------------------------------------------------------------

    def commit(
        self,
        keys: list[str],
        fields: list[str],
        rings: list[np.ndarray],
        present: np.ndarray,
        expire: np.ndarray,
        ttl_s: int,
        fences: dict[str, tuple[Watermark, Watermark]],
        expected: list[bytes],
        applied: list[bytes],
    ) -> dict[str, Watermark | None] | None:
        """Write each key's rings (``rings[j][i]``: key i's ring of ``fields[j]`` as a uint8
        row, written where ``present[i, j]``) if its ``~applied`` is still ``expected[i]``,
        setting it to ``applied[i]`` (and the TTL where ``expire[i]``); then, if every key was
        accepted, move each fence key from its expected to its new watermark and mark the
        store as written (its generation). Returns None on success, else the current
        watermarks (another worker wrote a key or moved a watermark, or Redis lost them)."""
        fkeys = list(fences)
        kb = [k.encode() for k in keys]
        if not self.per_key:
            return self._commit_transaction(kb, fields, rings, present, expire, ttl_s, fences,
                                            applied)
        if kb:
            sha = _SCRIPTS["write"][1]
            ttl = bulk(b"%d" % ttl_s)
            zero = bulk(b"0")
            head0 = bulk(b"EVALSHA") + bulk(sha) + bulk(b"1")
            heads = [head0 + bulk(k) + bulk(e) + bulk(a) + (ttl if x else zero)
                     for k, e, a, x in zip(kb, expected, applied, expire.tolist(), strict=True)]
            fb = [f.encode() for f in fields]

            def pack(ix: list[int]):
                if len(ix) == len(kb):
                    cmds, which = ring_commands(heads, 7, fb, rings, present)
                    return cmds, which
                sel = np.asarray(ix, dtype=np.int64)
                cmds, which = ring_commands([heads[i] for i in ix], 7, fb,
                                            [r[sel] for r in rings], present[sel])
                return cmds, [ix[w] for w in which]

            replies = self._per_key(kb, pack)
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
        sha = _SCRIPTS["advance"][1]
        routing = [k.encode() for k in fkeys] + [STORE_KEY.encode()]
        cmds_of = [_pack(("EVALSHA", sha, 1, k, b"%d:%d" % (fences[k][0].offset,
                                                             fences[k][0].epoch),
                          fences[k][1].encode())) for k in fkeys]
        cmds_of.append(_pack(("HSET", STORE_KEY, GENERATION_FIELD, self.generation)))
        replies = self._per_key(routing, lambda ix: ([cmds_of[i] for i in ix], list(ix)))
        _raise_errors(replies)
        if any(isinstance(r, list) for r in replies[:-1]):
            return dict(zip(fkeys, self.watermarks(fkeys), strict=True))
        return None

    def _commit_transaction(self, kb: list[bytes], fields: list[str], rings: list[np.ndarray],
                            present: np.ndarray, expire: np.ndarray, ttl_s: int,
                            fences: dict[str, tuple[Watermark, Watermark]],
                            applied: list[bytes]) -> dict[str, Watermark | None] | None:
        """One Redis: the same effects in one ``MULTI/EXEC`` after ``WATCH`` of the watermarks
        (every key can share a transaction here), plain ``HSET``s that also set ``~applied``:
        the fence is the watermarks, and a script per key would cost Redis 2-3x the time of the
        ``HSET`` (``bench/redis_write.py``)."""
        fkeys = list(fences)
        with self._connection() as conn:
            if fkeys:
                _, raw = self._send(conn, [_pack(("WATCH", *fkeys)), _pack(("MGET", *fkeys))],
                                    2)
                current = [Watermark.decode(v) for v in raw]
                if any(not _same(c, fences[k][0]) for k, c in zip(fkeys, current, strict=True)):
                    self._send(conn, [_pack(("UNWATCH",))], 1)
                    return dict(zip(fkeys, current, strict=True))
            head = bulk(b"HSET")
            mark = bulk(APPLIED_FIELD.encode())
            heads = [head + bulk(k) + mark + bulk(a) for k, a in zip(kb, applied, strict=True)]
            cmds: list = [_pack(("MULTI",))]
            hsets, which = ring_commands(heads, 4, [f.encode() for f in fields], rings, present)
            cmds += hsets
            due = [kb[i] for i in np.nonzero(expire)[0].tolist()]
            cmds += [_pack(("EXPIRE", key, ttl_s)) for key in due]
            cmds += [_pack(("SET", k, fences[k][1].encode())) for k in fkeys]
            cmds.append(_pack(("HSET", STORE_KEY, GENERATION_FIELD, self.generation)))
            cmds.append(_pack(("EXEC",)))
            replies = self._send(conn, cmds, 3 + len(which) + len(due) + len(fkeys))
        errors = [r for r in replies if isinstance(r, Exception)]
        errors += [r for r in replies[-1] or () if isinstance(r, Exception)]
        if errors:
            raise errors[0]
        if replies[-1] is None:  # a watched watermark moved between MGET and EXEC
            return dict(zip(fkeys, self.watermarks(fkeys), strict=True))
        return None

    def put_rings(self, keys: list[str], fields: list[str], rings: list[np.ndarray],
                  present: np.ndarray, ttl_s: int, clear_applied: bool) -> int:
        """``HSET`` each key's present rings and ``EXPIRE`` it, one script call per key,
        unfenced (a rebuild's absolute writes); ``clear_applied``: drop the keys' ``~applied``
        (their rings now hold what the log holds, no more). Returns keys written."""
        kb = [k.encode() for k in keys]
        fb = [f.encode() for f in fields]
        head = bulk(b"EVALSHA") + bulk(_SCRIPTS["put"][1]) + bulk(b"1")
        tail = bulk(b"1" if clear_applied else b"0") + bulk(b"%d" % ttl_s)
        heads = [head + bulk(k) + tail for k in kb]

        def pack(ix: list[int]):
            sel = np.asarray(ix, dtype=np.int64)
            if len(ix) == len(kb):
                return ring_commands(heads, 6, fb, rings, present)
            cmds, which = ring_commands([heads[i] for i in ix], 6, fb,
                                        [r[sel] for r in rings], present[sel])
            return cmds, [ix[w] for w in which]

        replies = self._per_key(kb, pack)
        _raise_errors(replies)
        return sum(1 for r in replies if r is not None)


def _same(current: Watermark | None, expected: Watermark) -> bool:
    if current is None:
        return expected.offset < 0 and expected.epoch == 0
    return (current.offset, current.epoch) == (expected.offset, expected.epoch)


def _read(conn) -> Any:
    try:
        return conn.read_response()
    except redis.ResponseError as e:
        return e


def _raise_errors(replies: list) -> None:
    for r in replies:
        if isinstance(r, Exception):
            raise r


def _load_scripts(node: Any) -> None:
    for text, _ in _SCRIPTS.values():
        node.script_load(text)


def connect(url: str, transport: RedisTransport | None = None) -> Any:
    """The worker's client: one Redis (``redis://``, ``rediss://``) or a cluster
    (``redis+cluster://``), with ``transport``'s credentials and TLS files."""
    return connect_url(url, transport, socket_timeout=30, socket_connect_timeout=5)
