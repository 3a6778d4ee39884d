"""When a folded batch became readable online, for the event log's ``_applied_ts``.

The online writer folds a batch, then writes it to Redis in the background; the offline
writer appends the same events to the event log about once a second, possibly before that
write returned. A ``Landing`` links the two: the fold records which of the batch's events the
late rule let through, the write's thread stamps the time its transaction returned, and the
offline writer waits for that stamp before it writes the batch's rows. "Served" training sets
(``features.offline.training_set``, ``timeline="served"``) count an event at a row's time only
once that time has passed; an event the late rule kept out is stamped ``NEVER_US``.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from features.offline.served import NEVER_US  # a late event's: no read could ever see it


class LandingTimeout(RuntimeError):
    """The Redis write of buffered events never completed (the worker is stopping or Redis
    failed): the event log does not get them; a restart replays them from Kafka."""


class Landing:
    """One folded batch: per stream, which events were applied (``on``), and when the Redis
    write carrying them returned (``at_us``, None until then)."""

    def __init__(self) -> None:
        self.on: dict[int, np.ndarray] = {}
        self.at_us: int | None = None
        self._done = threading.Event()

    def land(self, at_us: int) -> None:
        """The write that carried this batch completed at ``at_us`` (or the batch's events
        went to a rebuild from the log, which applies them at about that time)."""
        if self.at_us is None:
            self.at_us = at_us
            self._done.set()

    def fail(self) -> None:
        """The write raised (the worker stops): a waiting flush gives up at once."""
        self._done.set()

    def wait(self, stopping: threading.Event, timeout_s: float = 300.0,
             after_stop_s: float = 10.0) -> int:
        """The landing time; waits for it (the write may still be pending or in flight).
        Gives up after ``timeout_s``, or ``after_stop_s`` once ``stopping`` is set."""
        t0 = time.monotonic()
        stopped_at = None
        while not self._done.wait(0.2):
            now = time.monotonic()
            if stopping.is_set() and stopped_at is None:
                stopped_at = now
            if now - t0 > timeout_s or (stopped_at is not None and now - stopped_at > after_stop_s):
                raise LandingTimeout("the Redis write of buffered events did not complete; "
                                     "they are not appended to the event log")
        if self.at_us is None:
            raise LandingTimeout("the Redis write of buffered events failed; they are not "
                                 "appended to the event log (a restart replays them)")
        return self.at_us

    def applied_us(self, stream: int, n: int) -> np.ndarray:
        """Per event of ``stream``'s part of the batch: when it became readable online
        (``NEVER_US`` for an event the late rule kept out). Call after ``wait``."""
        on = self.on.get(stream)
        at = np.full(n, self.at_us, dtype=np.int64)
        if on is None:
            return at
        return np.where(on, at, NEVER_US)
