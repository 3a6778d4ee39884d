"""Shadow scoring in a child process: the champion's GIL never runs a shadow tree walk.

A thread in the scorer process, even at nice 19, shares the GIL with requests; two 300-tree
shadows doubled the champion's p99 that way. Here a request only pays ``submit``: it appends a
small tuple (request id, time, entity key, versions, feature hash, the float64 vector as bytes)
to a buffer. Every ``batch`` jobs (or ``linger_s``) the request that fills it encodes the chunk
(``encode_chunk``: a JSON header and the vectors' raw float64 bytes: exact, no pickle) and
sends it as one message on a non-blocking Unix ``SOCK_SEQPACKET`` socket:
no ``multiprocessing.Queue`` feeder thread to wake, no lock or GIL hand-off per chunk. Chunks are
large (up to ``maxsize // 8`` jobs, 0.5 s) because each wakes the child for a burst of CPU on
cores the champion shares: 128 jobs / 50 ms measured a 2-shadow p99 ratio of 1.38, 256 / 0.5 s
1.08 (``bench/experiments.py``, one full run each). The bound
is in jobs: the child publishes how many it has taken in shared memory, and a chunk that would
put more than ``maxsize`` jobs in flight (or finds the socket full) is dropped and counted,
never queued without bound.

The child (spawn context, ``SCHED_IDLE``, else nice 19) starts lazily on the first submit (or
``start()``/``wait_ready()``), so attaching a router costs nothing; it loads each shadow version
from the registry as LightGBM text (never a pickled model) and predicts once per version per
batch. With ``kafka=(bootstrap, topic)`` it logs the shadow records to Kafka itself (its own
producer); its counts (taken, scored, records its log dropped) are shared-memory integers the
parent reads when it wants them, so nothing comes back per batch. Without Kafka it sends
``ShadowBatch``es back and a parent thread hands them to ``emit`` (e.g. tests collecting
records). The scorer's ``/metrics`` gets ``tessera_shadow_dropped_total`` and
``tessera_shadow_log_dropped_total`` per model (``serving.experiments.metrics``).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import socket
import threading
import time
from collections.abc import Callable

import numpy as np
import orjson

from serving.experiments.metrics import ShadowMetrics
from serving.experiments.records import FeatureLogging
from serving.experiments.shadow import ShadowBatch, ShadowJob

log = logging.getLogger(__name__)
_STOP = b"stop"
_DONE = "done"
# shared counters: written by the child, read by the parent
_TAKEN, _SCORED, _LOG_DROPPED, _READY, _CLOSING = range(5)
_MAX_MESSAGE = 1 << 20
_CHUNK_BYTES = 64 * 1024  # a chunk also goes when it is this big (wide vectors)


def encode_chunk(items: list[tuple]) -> bytes:
    """One message for a chunk of ``(request id, ts, entity key, versions, features hash, raw
    float64 vector)``: the length of a JSON header, the header, then the vectors' bytes."""
    head = orjson.dumps([[rid, ts, key, list(versions), fhash, len(raw)]
                         for rid, ts, key, versions, fhash, raw in items])
    return b"".join([len(head).to_bytes(4, "little"), head, *(it[5] for it in items)])


def decode_chunk(msg: bytes) -> list[tuple]:
    """The items ``encode_chunk`` wrote, vectors as raw bytes again."""
    n = int.from_bytes(msg[:4], "little")
    at = 4 + n
    out = []
    for rid, ts, key, versions, fhash, size in orjson.loads(msg[4:at]):
        out.append((rid, ts, key, tuple(versions), fhash, msg[at:at + size]))
        at += size
    return out


def _lower_priority(nice: int) -> None:
    """SCHED_IDLE where Linux allows it (runs only on a core nothing else wants, and any waking
    request thread preempts it at once), else nice: a niced normal task can still hold a core
    for a slice when a request wakes up."""
    if nice <= 0:
        return
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        return
    except (AttributeError, OSError):
        pass
    try:
        os.nice(nice)
    except OSError:
        pass


def _normal_priority(pid: int) -> None:
    """Back to a normal task: at close the scorer serves no more requests, so the queued shadow
    work should finish now, not wait for an idle core (on a busy machine it may never get one).
    Unprivileged processes may be refused the lower nice value: then it stays as it was."""
    try:
        os.sched_setscheduler(pid, os.SCHED_OTHER, os.sched_param(0))
    except (AttributeError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, pid, 0)
    except (AttributeError, OSError):
        pass


def _child(
    registry_uri: str,
    model: str,
    preload: tuple[str, ...],
    jobs: socket.socket,
    counts,
    results: mp.Queue | None,
    batch: int,
    with_vectors: bool,
    nice: int,
    kafka: tuple | None,
    log_queue: int,
) -> None:
    """Child main loop: load versions by name from the registry, score batches, send results
    (to Kafka itself when ``kafka`` = (bootstrap, topic), else back to the parent)."""
    _lower_priority(nice)
    if counts[_CLOSING]:  # close() may have restored the priority before this lowered it
        _normal_priority(0)
    sink = None
    if kafka is not None:
        from serving.experiments.kafka_log import KafkaRecordLog

        bootstrap, topic, *security = kafka  # (bootstrap, topic[, KafkaSecurity])
        sink = KafkaRecordLog(bootstrap, topic, maxsize=log_queue,
                              security=security[0] if security else None)
    from serving.registry import ModelRegistry
    from serving.scorer.fast import FastPredictor

    registry = ModelRegistry(registry_uri)
    predictors: dict[str, FastPredictor] = {}

    def predictor(version: str) -> FastPredictor:
        if version not in predictors:
            predictors[version] = FastPredictor(registry.get(model, version).booster())
        return predictors[version]

    for v in preload:
        try:
            predictor(v)
        except Exception:  # reported per record when it is used
            log.exception("shadow %s v%s failed to load", model, v)
    counts[_READY] = 1
    jobs.setblocking(True)
    stop = False
    while not stop:
        msg = jobs.recv(_MAX_MESSAGE)
        if not msg or msg == _STOP:
            break
        items = decode_chunk(msg)
        while len(items) < batch:
            try:
                msg = jobs.recv(_MAX_MESSAGE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if not msg or msg == _STOP:
                stop = True
                break
            items.extend(decode_chunk(msg))
        counts[_TAKEN] += len(items)
        batches = _score(model, items, predictor, with_vectors)
        if sink is not None:
            for b in batches:
                if not sink.log(b):
                    counts[_LOG_DROPPED] += len(b.jobs)
        elif results is not None:
            results.put(batches)
        counts[_SCORED] += len(items)
    if sink is not None:
        sink.close()
    if results is not None:
        results.put(_DONE)


def _score(model: str, items: list, predictor, with_vectors: bool) -> list[ShadowBatch]:
    group_of: dict[str, list[ShadowJob]] = {}
    for rid, ts, key, versions, fhash, raw in items:
        job = ShadowJob(rid, ts, key, np.frombuffer(raw, dtype=np.float64), versions, fhash)
        for v in versions:
            group_of.setdefault(v, []).append(job)
    out = []
    for version, group in group_of.items():
        t0 = time.perf_counter()
        error = None
        try:
            x = np.vstack([j.x for j in group])
            scores = np.asarray(predictor(version).predict(x), dtype=float).reshape(len(group))
        except Exception as e:  # a broken shadow is logged, never raised to anyone
            scores = np.full(len(group), np.nan)
            error = f"{type(e).__name__}: {e}"
        per_row_ms = (time.perf_counter() - t0) * 1000 / len(group)
        out.append(ShadowBatch(model, version, group, scores, per_row_ms, error, with_vectors))
    return out


class ProcessShadowRunner:
    """Same surface as ``ShadowRunner`` (submit, dropped, scored, close); scoring in a child."""

    def __init__(
        self,
        registry_uri: str,
        model: str,
        emit: Callable[[ShadowBatch], object],
        features: FeatureLogging = "hash",
        preload: tuple[str, ...] = (),
        maxsize: int = 1024,
        batch: int = 64,
        linger_s: float = 0.5,
        nice: int = 19,
        kafka: tuple | None = None,
        log_queue: int = 100_000,
    ) -> None:
        """``log_queue``: shadow batches the child's Kafka log may hold before it drops."""
        self.model = model
        self._emit = emit
        self.dropped = 0
        self.submitted = 0
        self._maxsize = maxsize
        self._chunk = max(1, min(batch, maxsize // 8))
        self._linger = linger_s
        self._buffer: list[tuple] = []
        self._bytes = 0
        self._since = 0.0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._metrics = ShadowMetrics(model)
        self._log_dropped_seen = 0
        ctx = mp.get_context("spawn")
        self._counts = ctx.RawArray("q", 5)
        self._sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock.setblocking(False)
        self._results = ctx.Queue() if kafka is None else None
        self._proc = ctx.Process(
            target=_child,
            args=(registry_uri, model, tuple(preload), child_sock, self._counts, self._results,
                  batch, features == "vector", nice, kafka, log_queue),
            name=f"shadow-{model}",
            daemon=True,
        )
        self._child_sock = child_sock
        self._spawned = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the child if not yet started (in the background: spawning takes ~5 ms)."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"shadow-{self.model}",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        """The parent's helper thread: spawn the child, then flush lingering jobs (and hand
        results back to ``emit`` when the child sends them)."""
        try:
            self._proc.start()
        except Exception:  # jobs pile up to ``maxsize`` in flight, then drop and count
            log.exception("the shadow process of %s could not start", self.model)
            return
        finally:
            self._child_sock.close()  # the child holds its own copy
            self._spawned.set()
        if self._results is not None:
            self._read()
        else:
            while not self._stopping.wait(max(self._linger, 0.1)):
                self._flush_if_stale()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Start the child if needed; True once it has loaded the preloaded versions."""
        self.start()
        deadline = time.monotonic() + timeout
        if not self._spawned.wait(timeout):
            return False
        while not self._counts[_READY]:
            if time.monotonic() > deadline or not self._proc.is_alive():
                return False
            time.sleep(0.01)
        return True

    def submit(self, job: ShadowJob) -> bool:
        """Buffer ``job`` for the child; False (counted in ``dropped``) when its chunk is dropped
        because the child is ``maxsize`` jobs behind."""
        raw = np.ascontiguousarray(job.x, dtype=np.float64).tobytes()
        item = (job.request_id, job.ts, job.entity_key, job.versions, job.features_hash, raw)
        with self._lock:
            if not self._buffer:
                self._since = time.monotonic()
            self._buffer.append(item)
            self._bytes += len(raw) + 128
            if (len(self._buffer) >= self._chunk or self._bytes >= _CHUNK_BYTES
                    or time.monotonic() - self._since > self._linger):
                return self._flush()
        return True

    def _flush(self) -> bool:
        """Send the buffered jobs to the child as one message (caller holds the lock)."""
        chunk, self._buffer, self._bytes = self._buffer, [], 0
        if not chunk:
            return True
        self._start()
        self._sync_metrics()
        if self.submitted - self._counts[_TAKEN] + len(chunk) > self._maxsize:
            return self._drop(len(chunk))
        try:
            self._sock.send(encode_chunk(chunk))
        except OSError:  # full (BlockingIOError), too big, or the child is gone
            return self._drop(len(chunk))
        self.submitted += len(chunk)
        return True

    def _drop(self, n: int) -> bool:
        self.dropped += n
        self._metrics.dropped.inc(n)
        return False

    def _sync_metrics(self) -> None:
        """Bring the child's log drops into this process's metrics."""
        seen = self._counts[_LOG_DROPPED]
        if seen > self._log_dropped_seen:
            self._metrics.log_dropped.inc(seen - self._log_dropped_seen)
            self._log_dropped_seen = seen

    def _flush_if_stale(self) -> None:
        with self._lock:
            if self._buffer and time.monotonic() - self._since > self._linger:
                self._flush()
            self._sync_metrics()

    def _read(self) -> None:
        """Hand the batches the child sends back to ``emit``; flush lingering jobs meanwhile."""
        while True:
            try:
                batches = self._results.get(timeout=self._linger)
            except queue.Empty:
                if not self._proc.is_alive():
                    return
                self._flush_if_stale()
                continue
            except (EOFError, OSError):
                return
            if batches == _DONE:
                return
            for b in batches:
                try:
                    self._emit(b)
                except Exception:  # a logging failure must not stop shadow results
                    log.exception("emitting a shadow batch of %s failed", self.model)

    @property
    def scored(self) -> int:
        return self._counts[_SCORED]

    @property
    def log_dropped(self) -> int:
        """Shadow records the child's own Kafka log dropped (its queue was full)."""
        return self._counts[_LOG_DROPPED]

    def close(self, timeout: float = 10.0) -> None:
        """Finish queued work, stop the child (terminate if it does not stop), join both."""
        with self._lock:
            self._flush()
        self._stopping.set()
        if self._thread is None:
            self._child_sock.close()
        elif self._spawned.wait(timeout) and self._proc.pid is not None:
            if self._proc.is_alive():
                self._counts[_CLOSING] = 1  # set first: a child lowering itself later sees it
                _normal_priority(self._proc.pid)
                self._sock.settimeout(timeout)
                try:
                    self._sock.send(_STOP)
                except OSError:
                    pass
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout)
            self._thread.join(timeout)
            self._sync_metrics()
        self._sock.close()
        if self._results is not None:
            self._results.close()
            self._results.cancel_join_thread()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._spawned.is_set() and self._proc.is_alive()
