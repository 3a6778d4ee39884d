"""The online store's readiness, refreshed on a background thread so no request waits on Redis.

Every ``interval_s`` (every ``probe_s`` while the store's circuit breaker is open) one
``HGETALL tessera:store`` with the serving timeout answers three questions at once: does Redis
answer in time (a timeout or lost connection opens the breaker, an answer closes it -- this is
the probe that ends fail-fast), is it serving (LOADING, BUSY, ... replies), and does the store
hold data (``features.online.layout.store_readiness``: a worker wrote a generation and is not
rebuilding). ``/readyz`` only reads the last result.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from features.online.hmget import opens_breaker, store_error
from features.online.layout import STORE_KEY, store_readiness
from features.online.read import OnlineStore

log = logging.getLogger(__name__)


class StoreHealth:
    def __init__(self, store: OnlineStore, interval_s: float = 0.5, probe_s: float = 0.1) -> None:
        self.client = store.client
        self.breaker = store.reads.breaker
        self.interval_s = interval_s
        self.probe_s = probe_s
        self.ready = False
        self.reason = "online store not checked yet"
        self.checked = 0.0  # monotonic time of the last check
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """One refresh (also the breaker's probe)."""
        try:
            fields = self.client.hgetall(STORE_KEY)
        except redis.RedisError as e:
            if opens_breaker(e):
                self.breaker.failure(e)
            self.ready, self.reason = False, f"redis: {store_error(e)}"
        else:
            if self.breaker.opened is not None:
                log.info("Redis answers again: requests go to it again")
            self.breaker.success()
            ok, why = store_readiness(fields)
            self.ready, self.reason = ok, why if ok else f"online store: {why}"
        self.checked = time.monotonic()

    def start(self) -> StoreHealth:
        """Check once now, then keep checking on a daemon thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return self
            self.check()
            self._thread = threading.Thread(target=self._run, name="store-health", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.probe_s if self.breaker.opened is not None
                                  else self.interval_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the checker must outlive any surprise
                log.exception("online store health check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def problems(self) -> list[str]:
        """Why the store cannot serve now ([] = it can), from the last background check."""
        if self._thread is None:
            self.start()
        out = [] if self.ready else [self.reason]
        if self.ready and self.breaker.opened is not None:  # requests failed since the check
            out.append(f"redis: {self.breaker.refusal()}")
        age = time.monotonic() - self.checked
        if age > max(2.0, 4 * self.interval_s):
            out.append(f"online store readiness is stale: last checked {age:.1f} s ago")
        return out
