"""A bounded queue drained in batches by one daemon thread: work that must never slow a request.

``submit`` never blocks: when the queue is full the item is dropped and counted. The thread takes
one item, then whatever else is already waiting (up to ``batch``), and hands the list to
``handle`` so per-call overhead (a LightGBM predict, a Kafka send) is paid once per batch.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
_STOP = object()


class BoundedWorker(Generic[T]):
    def __init__(
        self,
        handle: Callable[[list[T]], None],
        maxsize: int = 1024,
        batch: int = 64,
        name: str = "bounded-worker",
    ) -> None:
        self._handle = handle
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._batch = batch
        self.submitted = 0
        self.dropped = 0
        self.handled = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Queue ``item``; False (and counted in ``dropped``) when the queue is full."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            return False
        self.submitted += 1
        return True

    def _run(self) -> None:
        q = self._queue
        while True:
            first = q.get()
            if first is _STOP:
                return
            items = [first]
            stop = False
            while len(items) < self._batch:
                try:
                    nxt = q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                items.append(nxt)
            try:
                self._handle(items)
                self.handled += len(items)
            except Exception:  # a background failure must not kill the worker
                self.failed += len(items)
                log.exception("background batch of %d failed", len(items))
            if stop:
                return

    def close(self, timeout: float = 10.0) -> None:
        """Finish queued work, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    @property
    def depth(self) -> int:
        return self._queue.qsize()
