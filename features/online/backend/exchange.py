"""Commands of many keys in one round trip per node, redirects followed.

redis-py's pipeline costs about 10 µs of Python per command -- more than the worker spends
folding an event -- so the backends write pre-packed RESP (``resp.py``) on connections borrowed
from each node's pool: every node gets its commands as one buffer, all nodes are sent to before
any reply is read (they work in parallel), and error replies come back as values, in place.

``per_key`` sends one command per key, grouped by the node serving the key's slot, and deals
with the replies of commands that did not run:

- ``MOVED``: the slot map is out of date (the cluster was resharded): relearn it, send again;
- ``ASK``: the slot is being migrated and this key is already on the node named: send that
  node ``ASKING`` and the command, the slot map unchanged (the slot still belongs to the old
  node until the migration ends; relearning it would only learn that again);
- ``TRYAGAIN`` / ``CLUSTERDOWN`` (a multi-key operation mid-migration, a failover): wait a
  little, send again;
- ``NOSCRIPT`` (a node restarted, or was added): load the scripts there, send again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import hiredis
import redis
import redis.exceptions as rexc

from features.online.cluster import ask_target, by_node, node_at, refresh

pack = hiredis.pack_command
ATTEMPTS = 5
_ASKING = pack(("ASKING",))
_AGAIN = (rexc.MovedError, rexc.TryAgainError, rexc.NoScriptError, rexc.ClusterDownError)

# ``pack(indices) -> (buffers, key index of each command in them)``: the commands of some keys
Packer = Callable[[list[int]], tuple[list, list[int]]]


@contextmanager
def connection(node: Any) -> Iterator[Any]:
    """A pooled connection of ``node`` (a client); dropped, not reused, if anything fails on
    it mid-exchange (a reply may still be in flight)."""
    pool = node.connection_pool
    conn = pool.get_connection()
    try:
        yield conn
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def read_reply(conn: Any) -> Any:
    try:
        return conn.read_response()
    except redis.ResponseError as e:
        return e


def send(conn: Any, commands: list, n_replies: int) -> list:
    """Send packed commands as one buffer; read ``n_replies`` (error replies as values)."""
    conn.send_packed_command([b"".join(commands)])
    return [read_reply(conn) for _ in range(n_replies)]


def exchange(jobs: list[tuple[Any, list, int]]) -> list[list]:
    """``[(node client, packed commands, replies)]``: send every node its buffer, then read
    each node's replies."""
    if len(jobs) == 1:
        node, cmds, n = jobs[0]
        with connection(node) as conn:
            return [send(conn, cmds, n)]
    pools = [node.connection_pool for node, _, _ in jobs]
    conns = [p.get_connection() for p in pools]
    try:
        for conn, (_, cmds, _) in zip(conns, jobs, strict=True):
            conn.send_packed_command([b"".join(cmds)])
        return [[read_reply(conn) for _ in range(n)]
                for conn, (_, _, n) in zip(conns, jobs, strict=True)]
    except BaseException:
        for conn in conns:
            conn.disconnect()
        raise
    finally:
        for pool, conn in zip(pools, conns, strict=True):
            pool.release(conn)


def per_key(client: Any, keys: list[bytes], pack_keys: Packer,
            on_noscript: Callable[[Any], None] | None = None) -> list:
    """One command per key (``pack_keys(indices)``), grouped by node, one exchange; commands
    answered MOVED/ASK/TRYAGAIN/CLUSTERDOWN/NOSCRIPT (not run) are sent again as the module
    docstring says. Returns each key's reply (None: no command for it); other error replies
    are returned in place, for the caller to raise."""
    out: list = [None] * len(keys)
    todo = list(range(len(keys)))
    asked: dict[int, tuple[str, int]] = {}  # key index -> the node an ASK reply named
    for attempt in range(ATTEMPTS):
        jobs, order, asking = _jobs(client, keys, todo, asked, pack_keys)
        if not jobs:
            return out
        again: list[int] = []
        asked, moved, wait, last = {}, False, False, None
        for (node, _, _), which, ask, replies in zip(jobs, order, asking, exchange(jobs),
                                                     strict=True):
            if ask:
                _raise_errors(replies[0::2])  # ASKING's own replies: OK
                replies = replies[1::2]
            noscript = False
            for i, r in zip(which, replies, strict=True):
                target = ask_target(r) if isinstance(r, rexc.AskError) else None
                if target is not None:
                    asked[i], last = target, r
                elif isinstance(r, _AGAIN):
                    noscript |= isinstance(r, rexc.NoScriptError)
                    moved |= isinstance(r, rexc.MovedError)
                    wait |= isinstance(r, (rexc.TryAgainError, rexc.ClusterDownError))
                    again.append(i)
                    last = r
                else:
                    out[i] = r
            if noscript and on_noscript is not None:
                on_noscript(node)  # once per node: every key of its buffer was refused alike
        if not again and not asked:
            return out
        if attempt == ATTEMPTS - 1:
            raise last
        if moved:
            refresh(client)
        if wait:
            time.sleep(0.05 * (attempt + 1))  # a slot in migration or a failover under way
        todo = sorted(again + list(asked))
    return out


def _jobs(client: Any, keys: list[bytes], todo: list[int], asked: dict[int, tuple[str, int]],
          pack_keys: Packer) -> tuple[list, list, list]:
    """The exchange's jobs: the keys of ``todo`` by the node of their slot, except those an
    ASK reply sent elsewhere, each of which goes to its node after ``ASKING``."""
    jobs, order, asking = [], [], []
    direct = [i for i in todo if i not in asked] if asked else todo
    if direct:
        groups = by_node(client, [keys[i] for i in direct])
        for node, gix in groups:
            ix = direct if len(groups) == 1 else [direct[g] for g in gix]
            cmds, which = pack_keys(ix)
            if which:
                jobs.append((node, cmds, len(which)))
                order.append(which)
                asking.append(False)
    by_target: dict[tuple[str, int], list[int]] = {}
    for i, target in asked.items():
        by_target.setdefault(target, []).append(i)
    for (host, port), ix in by_target.items():
        cmds, which = [], []
        for i in ix:  # ASKING holds for the next command only: one command per key
            one, w = pack_keys([i])
            if w:
                cmds += [_ASKING, *one]
                which += w
        if which:
            jobs.append((node_at(client, host, port), cmds, 2 * len(which)))
            order.append(which)
            asking.append(True)
    return jobs, order, asking


def _raise_errors(replies: list) -> None:
    for r in replies:
        if isinstance(r, Exception):
            raise r

