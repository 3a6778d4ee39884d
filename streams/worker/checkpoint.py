"""The stream worker's exactly-once protocol, in the order it runs.

Kafka delivers at least once; every effect below is idempotent or fenced, and each step only
runs after the one before it holds, so a crash anywhere replays instead of losing, and a
replay changes nothing. Per polled batch of a partition (``app.Worker._process``):

1. **Check the partition** when it is new to this worker or its fetch went backwards
   (``app.Worker._check_partitions``): Redis lost its watermark while the event log has events
   → rebuild its rings from the log (``rebuild.py``); the record at the watermark is not the
   one applied → a new log epoch, offsets applied from 0 (``epochs.py``).
2. **Dead letters** of invalid records, acknowledged by the broker (``dlq.py``), only for
   offsets above the Redis watermark (at least once: a crash before step 4 repeats them).
3. **Forward** valid events that arrived off their entity's home partition, acknowledged
   (``repartition.py``); the home side skips repeats by one watermark per origin.
4. **Redis**, fenced (``online.OnlineWriter.submit``/``wait``,
   ``features.online.backend``: ``commit``). On a Redis Cluster no write spans two keys:

   a. every touched entity key, by one server-side script each: whole rings (absolute
      values) and the key's ``~applied`` (its home partition's offsets the rings now hold),
      only if ``~applied`` is still what this worker read or last wrote;
   b. only if every key was accepted: each watermark of the home partitions touched, by a
      compare-and-set script from the value the worker loaded to the new one.

   On one Redis, a and b are one ``MULTI/EXEC`` after ``WATCH`` of the watermarks (the
   rings carry ``~applied`` all the same). A crash between a and b leaves keys ahead of
   their watermark: the replay skips their events up to their own ``~applied``
   (``OnlineWriter._ahead``). ``judge_fence`` decides
   what a refused key or watermark means: *moved* (another worker wrote a key or advanced a
   watermark: reload and refold what is above it) or *lost* (a watermark is gone or went
   backwards: Redis lost data, step 1's rebuild runs for the source's partitions).

About once a second, in the background (``Checkpoint``):

5. **Event log**: append what was processed (``features.offline.event_log``), which drops
   offsets at or below its own watermark per (topic, partition, epoch); a failing disk is
   retried with back-off (``offline_sink.py``).
6. **Kafka offsets**: commit what steps 4 and 5 both hold — never past a partition's Redis
   watermark (for forwarded records: past what reached Redis).

On revocation steps 4 and 5 are flushed (no commit: the next owner re-reads from the last
commit and skips by the watermarks); on SIGTERM a last checkpoint runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from features.online.layout import Watermark

log = logging.getLogger("tessera.worker")

WRITTEN, MOVED, LOST = "written", "moved", "lost"


def judge_fence(fences: dict[Any, tuple[Watermark, Watermark]],
                current: dict[Any, Watermark | None] | None) -> tuple[str, set]:
    """What a fenced write's outcome means (step 4). ``fences``: stream -> (the watermark
    the writer expected, the one it wrote); ``current``: stream -> what Redis held instead
    (None: the write went through). Returns the verdict and the streams concerned."""
    if current is None:
        return WRITTEN, set()
    lost = set()
    for sid, (expected, _) in fences.items():
        cur = current.get(sid)
        if (cur is None and expected.offset >= 0) or (
                cur is not None and cur.epoch == expected.epoch
                and cur.offset < expected.offset):
            lost.add(sid)
    if lost:
        return LOST, lost
    return MOVED, {sid for sid, (expected, _) in fences.items()
                   if (current.get(sid) or Watermark()) != expected}


class Checkpoint:
    """Steps 5 and 6 for every pipeline: the event log, then the Kafka offsets, for what was
    processed when the checkpoint starts; one at a time, off the fresh path."""

    def __init__(self, pipelines: dict, pipe_of: dict, lock: threading.Lock,
                 consumer: Callable[[], Any]) -> None:
        self.pipelines = pipelines
        self.pipe_of = pipe_of
        self.lock = lock  # processing vs. taking the offline buffer
        self.consumer = consumer
        self.polled: dict = {}  # TopicPartition -> next offset, of what the sinks were given
        self.task: asyncio.Task | None = None
        self.started_at = time.monotonic()

    @property
    def buffered(self) -> int:
        return sum(p.offline.buffered for p in self.pipelines.values())

    def committable(self) -> dict:
        """Kafka offsets safe to commit: what the sinks were given, but never past what is in
        Redis (a crash must replay whatever Redis does not hold yet)."""
        out = {}
        for tp, pos in self.polled.items():
            pipe = self.pipe_of[tp.topic]
            if tp.topic == pipe.source.topic:
                wm = pipe.online.watermarks.get(tp.partition)
            else:  # forwarded records: what reached Redis (their dedupe is by origin)
                wm = pipe.online.rep_landed.get(tp.partition)
            if wm is not None:
                out[tp] = min(pos, wm + 1)
        return out

    def take(self) -> tuple[dict, dict]:
        with self.lock:
            bufs = {t: p.offline.take() for t, p in self.pipelines.items()}
            return bufs, self.committable()

    def write(self, bufs: dict) -> None:
        for topic, buf in bufs.items():
            self.pipelines[topic].offline.write(buf)

    async def run(self, wait: bool = False) -> None:
        """Start a checkpoint (after the previous one ended; ``wait``: and wait for it)."""
        if self.task is not None and not self.task.done():
            if not wait:
                return
            await self.task
        if self.task is not None and self.task.exception() is not None:
            # the log did not get that buffer: stop, a restart replays it from the last commit
            raise self.task.exception()
        self.started_at = time.monotonic()
        self.task = asyncio.ensure_future(self._run(*self.take()))
        if wait:
            await self.task

    async def _run(self, bufs: dict, offsets: dict) -> None:
        t0 = time.time()
        await asyncio.to_thread(self.write, bufs)  # step 5
        log.debug("offline flush %.1f ms", (time.time() - t0) * 1000)
        if not offsets:
            return
        try:
            await self.consumer().commit(offsets)  # step 6
        except (CommitFailedError, IllegalStateError, KafkaError) as e:
            # a rebalance took the partitions; both sinks already hold the batch, the next
            # owner skips it by the watermarks
            log.warning("offset commit failed (%s); the next owner will skip by watermark", e)

    async def flush_offline(self) -> None:
        """Everything processed so far into the log (on revocation; no offset commit)."""
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
        bufs, _ = self.take()
        await asyncio.to_thread(self.write, bufs)
