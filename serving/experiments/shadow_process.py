"""Shadow scoring in a child process: the champion's GIL never runs a shadow tree walk.

A thread in the scorer process, even at nice 19, shares the GIL with requests; two 300-tree
shadows doubled the champion's p99 that way. Here a request only pays ``submit``: one
``put_nowait`` of a small tuple (request id, time, entity key, versions, feature hash, the
float64 vector as bytes) on a bounded ``multiprocessing.Queue``; a full queue drops and counts,
never blocks. One daemon child per runner (spawn context, nice 19) loads each shadow version from
the registry as LightGBM text (never a pickled model), drains the queue in batches, predicts once
per version per batch. With ``kafka=(bootstrap, topic)`` the child logs the shadow records to
Kafka itself (its own kafka-python producer), so building and sending them costs the scorer
nothing; without it, it sends ``ShadowBatch``es back and a parent thread hands them to ``emit``
(e.g. tests collecting records). Either way the parent only counts what was scored.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from serving.experiments.records import FeatureLogging
from serving.experiments.shadow import ShadowBatch, ShadowJob

log = logging.getLogger(__name__)
_STOP = "stop"
_READY = "ready"
_DONE = "done"


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


def _child(
    registry_uri: str,
    model: str,
    preload: tuple[str, ...],
    jobs: mp.Queue,
    results: mp.Queue,
    batch: int,
    with_vectors: bool,
    nice: int,
    kafka: tuple[str, str] | None,
) -> None:
    """Child main loop: load versions by name from the registry, score batches, send results
    (to Kafka itself when ``kafka`` = (bootstrap, topic), else back to the parent)."""
    _lower_priority(nice)
    sink = None
    if kafka is not None:
        from serving.experiments.kafka_log import KafkaRecordLog

        sink = KafkaRecordLog(*kafka)
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
    results.put((_READY, 0, []))
    stop = False
    while not stop:
        first = jobs.get()
        if first == _STOP:
            break
        items = list(first)
        while len(items) < batch:
            try:
                nxt = jobs.get_nowait()
            except queue.Empty:
                break
            if nxt == _STOP:
                stop = True
                break
            items.extend(nxt)
        batches = _score(model, items, predictor, with_vectors)
        if sink is not None:
            for b in batches:
                sink.log(b)
            batches = []
        results.put((_READY, len(items), batches))
    if sink is not None:
        sink.close()
    results.put((_DONE, 0, []))


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
        linger_s: float = 0.02,
        nice: int = 19,
        kafka: tuple[str, str] | None = None,
    ) -> None:
        self.model = model
        self._emit = emit
        self.dropped = 0
        self.submitted = 0
        self.scored = 0
        self._ready = threading.Event()
        self._buffer: list[tuple] = []
        self._since = 0.0
        self._chunk = max(1, min(batch, maxsize // 8))
        self._linger = linger_s
        self._lock = threading.Lock()
        ctx = mp.get_context("spawn")
        # the queue holds chunks of jobs: a put wakes the queue's feeder thread, so one put per
        # chunk (or per ``linger_s``) instead of one per request keeps GIL handoffs rare
        self._jobs = ctx.Queue(maxsize=max(1, maxsize // self._chunk))
        self._results = ctx.Queue()
        self._proc = ctx.Process(
            target=_child,
            args=(registry_uri, model, tuple(preload), self._jobs, self._results, batch,
                  features == "vector", nice, kafka),
            name=f"shadow-{model}",
            daemon=True,
        )
        self._proc.start()
        self._reader = threading.Thread(target=self._read, name=f"shadow-{model}-results",
                                         daemon=True)
        self._reader.start()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """True once the child has started and loaded the preloaded versions."""
        return self._ready.wait(timeout)

    def submit(self, job: ShadowJob) -> bool:
        """Queue ``job`` for the child; False (counted in ``dropped``) when the queue is full."""
        item = (job.request_id, job.ts, job.entity_key, job.versions, job.features_hash,
                np.ascontiguousarray(job.x, dtype=np.float64).tobytes())
        with self._lock:
            if not self._buffer:
                self._since = time.monotonic()
            self._buffer.append(item)
            if len(self._buffer) >= self._chunk or time.monotonic() - self._since > self._linger:
                return self._flush()
        return True

    def _flush(self) -> bool:
        """Hand the buffered jobs to the child (caller holds the lock); a full queue drops them."""
        chunk, self._buffer = self._buffer, []
        if not chunk:
            return True
        try:
            self._jobs.put_nowait(chunk)
        except queue.Full:
            self.dropped += len(chunk)
            return False
        self.submitted += len(chunk)
        return True

    def _read(self) -> None:
        while True:
            try:
                kind, n, batches = self._results.get(timeout=self._linger)
            except queue.Empty:
                if not self._proc.is_alive():
                    return
                if self._buffer and time.monotonic() - self._since > self._linger:
                    with self._lock:
                        self._flush()
                continue
            except (EOFError, OSError):
                return
            if kind == _DONE:
                return
            self._ready.set()
            for b in batches:
                try:
                    self._emit(b)
                except Exception:  # a logging failure must not stop shadow results
                    log.exception("emitting a shadow batch of %s failed", self.model)
            self.scored += n

    def close(self, timeout: float = 10.0) -> None:
        """Finish queued work, stop the child (terminate if it does not stop), join both."""
        with self._lock:
            self._flush()
        if self._proc.is_alive():
            try:
                self._jobs.put(_STOP, timeout=timeout)
            except queue.Full:
                pass
        self._reader.join(timeout)
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout)
        self._jobs.close()
        self._jobs.cancel_join_thread()
        self._results.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()
