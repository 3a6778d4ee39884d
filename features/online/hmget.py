"""Pipelined ``HMGET``s on a connection each thread holds, replies read with a short busy-poll.

Why not ``client.hmget``: its pool checkout, command dispatch and reply wrappers cost a few µs
per call (27 vs 23 µs p50 for the same ``HMGET`` on an idle machine), and its reads always
block. Why busy-poll: a thread that blocks in ``recv`` sleeps, and on
our (virtualised, shared) cores waking it costs more than Redis takes to answer -- a local
``HMGET`` of 10 fields took ~80 µs p50 blocking and ~35 µs polling, and the tree walk right
after it ran ~25 µs slower on the cache a sleep had cooled. So the reply is polled with
non-blocking ``recv`` for at most ``spin_us``, then waited for normally (the socket's timeout
still bounds the wait; 0 turns polling off). The cost is CPU: a core spins for up to ``spin_us``
per call, which only pays when replies come back within it.

The connection comes from the client's pool (so host, auth, db and timeouts are the client's;
redis-py does the handshake) and its socket (redis-py's ``_sock``) is then used through hiredis
directly. Clients without a pool, or with TLS, fall back to a redis-py pipeline.

Faults: a call has one deadline (the client's socket timeout, for the whole pipeline, not per
reply). A timeout or a lost connection opens a ``Breaker``: later calls fail at once
(``OnlineStoreError``) instead of each waiting out the timeout, until a probe succeeds -- the
scorer's background health check (``serving.scorer.health``), or else one call let through
after ``retry_s``. Every Redis error reply (LOADING, BUSY, MISCONF, READONLY, ...) is an
``OnlineStoreError`` naming it; none is retried.
"""

from __future__ import annotations

import math
import select
import socket
import threading
import time
from typing import Any

import hiredis
import redis

from features.errors import OnlineStoreError
from features.online.cluster import ask_target, by_node, is_cluster, node_at, refresh


class _Wire:
    """One thread's connection: its socket (non-blocking once connected), reply parser, buffer."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.sock: socket.socket | None = None
        self.buf = bytearray(1 << 16)
        # set per socket by ``socket()`` (a dropped socket's half-read reply must not leak)
        self.reader: hiredis.Reader
        self.readable: select.poll
        self.timeout_s: float | None = None
        self.timeout_ns = 10**18

    def socket(self) -> socket.socket:
        if self.sock is None:
            self.conn.connect()  # handshake (auth, db) by redis-py
            sock = self.conn._sock
            self.timeout_s = sock.gettimeout()
            self.timeout_ns = 10**18 if self.timeout_s is None else int(self.timeout_s * 1e9)
            sock.setblocking(False)
            self.readable = select.poll()
            self.readable.register(sock, select.POLLIN)
            self.reader = hiredis.Reader(replyError=redis.ResponseError)
            self.sock = sock
        return self.sock

    def wait(self, readable: bool, deadline_ns: int) -> None:
        """Block until the socket is readable (or writable) or the call's deadline passes."""
        t = self.timeout_s
        if t is None:
            left = None
        else:
            left = (deadline_ns - time.perf_counter_ns()) / 1e9
            if left <= 0:
                raise TimeoutError(f"no reply within the client's socket timeout ({t} s)")
        if readable:
            ready = self.readable.poll(-1 if left is None else max(1, math.ceil(left * 1000)))
        else:
            ready = select.select([], [self.sock], [], left)[1]
        if not ready:
            raise TimeoutError(f"no reply within the client's socket timeout ({t} s)")

    def send(self, data: bytes, deadline_ns: int) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view):]
            except BlockingIOError:
                self.wait(False, deadline_ns)

    def drop(self) -> None:
        """Forget the socket: a reply may still be in flight, so it is never reused."""
        self.sock = None
        self.conn.disconnect()


# the error replies worth a sentence of their own (any other one is quoted as is)
_REPLIES = {
    "LOADING": "Redis is loading its dataset into memory",
    "BUSY": "Redis is busy running a script",
    "MISCONF": "Redis cannot persist its data (MISCONF)",
    "READONLY": "this Redis is a read-only replica",
    "MASTERDOWN": "this Redis replica lost its primary",
}
_SLOW = (redis.ConnectionError, redis.TimeoutError, OSError, hiredis.HiredisError)


_NOT_SERVING = ("LOADING", "BUSY", "MASTERDOWN")
_REDIRECTS = ("MOVED", "ASK", "TRYAGAIN")  # a cluster's slot moved or is moving


def is_slow(e: BaseException) -> bool:
    """A timeout or a lost connection; redis-py's LOADING error is a ConnectionError subclass
    but a prompt answer."""
    return isinstance(e, _SLOW) and not isinstance(e, redis.BusyLoadingError)


def opens_breaker(e: BaseException) -> bool:
    """A timeout, a lost connection, or a Redis that answers it is not serving (LOADING, BUSY,
    MASTERDOWN): later calls would only wait or reconnect for the same answer."""
    return isinstance(e, _SLOW) or (
        isinstance(e, redis.ResponseError) and str(e).split(" ", 1)[0] in _NOT_SERVING)


def store_error(e: BaseException) -> OnlineStoreError:
    """A Redis failure as the ``OnlineStoreError`` the scorer answers 503 with."""
    if isinstance(e, OnlineStoreError):
        return e
    if isinstance(e, redis.BusyLoadingError):
        return OnlineStoreError(f"{_REPLIES['LOADING']}: {e}")
    if isinstance(e, redis.ResponseError) or (isinstance(e, redis.RedisError) and not is_slow(e)):
        msg = str(e)
        what = _REPLIES.get(msg.split(" ", 1)[0])
        return OnlineStoreError(f"{what}: {msg}" if what else f"Redis answered an error: {msg}")
    return OnlineStoreError(f"Redis unreachable or too slow: {e!r}")


class Breaker:
    """Fails calls fast after Redis timed out or dropped a connection, until a probe succeeds.

    ``failure`` opens it (or keeps it open), ``success`` closes it. While open, ``allow``
    lets one call through as a probe once ``retry_s`` passed since the last failure (so a
    store without a background prober still recovers); the scorer's health check probes every
    100 ms while it is open, and its failures keep requests from ever being the probe."""

    def __init__(self, retry_s: float = 1.0) -> None:
        self.retry_s = retry_s
        self.opened: float | None = None  # monotonic time of the last failure; None = closed
        self.error = ""
        self._probing = False
        self._lock = threading.Lock()

    def failure(self, e: BaseException) -> None:
        with self._lock:
            self.opened = time.monotonic()
            self.error = str(store_error(e))
            self._probing = False

    def success(self) -> None:
        with self._lock:
            self.opened = None
            self._probing = False

    def allow(self) -> bool:
        """Whether a call may go to Redis now (always, when closed)."""
        if self.opened is None:
            return True
        with self._lock:
            if self.opened is None:
                return True
            if self._probing or time.monotonic() - self.opened < self.retry_s:
                return False
            self._probing = True
            return True

    def refusal(self) -> OnlineStoreError:
        opened = self.opened
        ago = 0.0 if opened is None else time.monotonic() - opened
        return OnlineStoreError(
            f"{self.error} ({ago:.1f} s ago; failing fast until a probe succeeds)"
        )


class HashReads:
    """``HMGET`` many (key, fields) in one round trip per node: ``fetch(keys) -> [[bytes |
    None]]``. Against a Redis Cluster the keys are grouped by the node serving their slot
    (``features.online.cluster.by_node``); every node's commands are sent before any reply is
    read, so the nodes answer in parallel. ``MOVED`` relearns the slot map and reads once
    more; ``ASK`` (a slot in migration) reads the key from the node named, after ``ASKING``.

    Two transports give the same replies and the same typed errors: the raw wire (hiredis on
    redis-py's socket, busy-polled) and redis-py's pipeline, taken for TLS, for clients
    without a pool, and with ``raw=False``; the tests run one suite against both."""

    def __init__(self, client: Any, spin_us: float = 200.0, breaker: Breaker | None = None,
                 raw: bool = True) -> None:
        self.client = client
        self.raw = raw
        self.cluster = is_cluster(client)
        self.spin_ns = int(spin_us * 1000)
        self.breaker = breaker or Breaker()
        self._local = threading.local()

    def _wire(self, client: Any | None = None) -> _Wire | None:
        """This thread's connection to ``client`` (a cluster's node client; default: ours)."""
        client = self.client if client is None else client
        if not self.raw:
            return None
        wires = getattr(self._local, "wires", None)
        if wires is None:
            wires = self._local.wires = {}
        held = wires.get(id(client))
        if held is not None:
            return held[1]
        pool = getattr(client, "connection_pool", None)
        if pool is None or not hasattr(pool, "make_connection"):
            return None
        conn = pool.make_connection()
        if not hasattr(conn, "_sock") or isinstance(conn, redis.SSLConnection):
            wires[id(client)] = (client, None)  # TLS reads need the SSL layer: pipelines
            return None
        wire = _Wire(conn)
        wires[id(client)] = (client, wire)  # the client is kept: its id is never reused
        return wire

    def fetch(self, keys: list[tuple[str, list[str]]]) -> list[list[bytes | None]]:
        breaker = self.breaker
        if breaker.opened is not None and not breaker.allow():
            raise breaker.refusal()
        if self.cluster:
            return self._fetch_cluster(keys)
        wire = self._wire()
        if wire is None:
            return self._pipelined(keys)
        try:
            sock = wire.socket()
            deadline = time.perf_counter_ns() + wire.timeout_ns  # one for the whole call
            if len(keys) == 1:
                k, f = keys[0]
                wire.send(hiredis.pack_command(("HMGET", k, *f)), deadline)
            else:
                wire.send(b"".join([hiredis.pack_command(("HMGET", k, *f)) for k, f in keys]),
                          deadline)
            spin_until = time.perf_counter_ns() + self.spin_ns  # one budget for the whole call
            replies = [self._reply(wire, sock, spin_until, deadline) for _ in keys]
        except _SLOW as e:
            wire.drop()
            breaker.failure(e)
            raise store_error(e) from e
        return self._checked(replies)

    def _checked(self, replies: list) -> list:
        breaker = self.breaker
        for r in replies:
            if isinstance(r, redis.ResponseError):
                if opens_breaker(r):
                    breaker.failure(r)
                raise store_error(r) from r
        if breaker.opened is not None:
            breaker.success()  # this call was the probe
        return replies

    def _fetch_cluster(self, keys: list[tuple[str, list[str]]], retry: bool = True
                       ) -> list[list[bytes | None]]:
        """One pipelined round trip per node touched: send to every node, then read."""
        groups = by_node(self.client, [k for k, _ in keys])
        wires = [self._wire(node) for node, _ in groups]
        if None in wires:
            return self._pipelined(keys)
        out: list = [None] * len(keys)
        sent = []
        wire = None
        try:
            deadline = 0
            for wire, (_, ix) in zip(wires, groups, strict=True):
                sock = wire.socket()
                deadline = deadline or time.perf_counter_ns() + wire.timeout_ns
                wire.send(b"".join([hiredis.pack_command(("HMGET", keys[i][0], *keys[i][1]))
                                    for i in ix]), deadline)
                sent.append((wire, sock, ix))
            spin_until = time.perf_counter_ns() + self.spin_ns
            for wire, sock, ix in sent:
                for i in ix:
                    out[i] = self._reply(wire, sock, spin_until, deadline)
        except _SLOW as e:
            for w, _, _ in sent:
                w.drop()  # replies may be in flight on any of them
            if wire is not None and wire.sock is not None:
                wire.drop()
            self.breaker.failure(e)
            raise store_error(e) from e
        asks = {}
        for i, r in enumerate(out):
            if isinstance(r, redis.ResponseError):
                target = ask_target(r)
                if target is not None:
                    asks.setdefault(target, []).append(i)
        if asks:  # a slot in migration: these keys are on the node named already
            self._follow_asks(keys, out, asks)
        if retry and any(isinstance(r, redis.ResponseError) and str(r).startswith(_REDIRECTS)
                         for r in out):
            refresh(self.client)  # resharded: learn the new slot map, read once more
            return self._fetch_cluster(keys, retry=False)
        return self._checked(out)

    def _follow_asks(self, keys: list[tuple[str, list[str]]], out: list,
                     asks: dict[tuple[str, int], list[int]]) -> None:
        """Read the keys an ``ASK`` reply sent to another node there, after ``ASKING`` (one
        round trip per node named; the slot map stays: the slot is still the old node's)."""
        for (host, port), ix in asks.items():
            try:
                pipe = node_at(self.client, host, port).pipeline(transaction=False)
                for i in ix:
                    pipe.execute_command("ASKING")
                    pipe.hmget(keys[i][0], keys[i][1])
                replies = pipe.execute(raise_on_error=False)
            except redis.RedisError as e:
                if opens_breaker(e):
                    self.breaker.failure(e)
                raise store_error(e) from e
            for i, r in zip(ix, replies[1::2], strict=True):
                out[i] = r

    def _pipelined(self, keys: list[tuple[str, list[str]]]) -> list[list[bytes | None]]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for k, f in keys:
                pipe.hmget(k, f)
            # error replies come back in place, as on the wire, and are checked the same way
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as e:
            if opens_breaker(e):
                self.breaker.failure(e)
            raise store_error(e) from e
        return self._checked(replies)

    def _reply(self, wire: _Wire, sock: socket.socket, spin_until: int, deadline: int) -> Any:
        reader, buf = wire.reader, wire.buf
        reply = reader.gets()
        while reply is False:
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                if time.perf_counter_ns() > spin_until:
                    wire.wait(True, deadline)
                continue
            if n == 0:
                raise redis.ConnectionError("Redis closed the connection")
            reader.feed(buf, 0, n)
            reply = reader.gets()
        return reply
