"""Shadow scoring off the critical path: the champion's feature vector, re-scored later in batch.

A request only pays ``submit`` (a non-blocking put). One background thread drains the queue,
stacks the waiting vectors into one matrix per shadow version and predicts once per version, so
two shadows cost the serving process two predict calls per batch, not two per request. The
thread runs at the lowest CPU priority (nice 19) so shadow work never takes a core from a
request. When the queue is full the job is dropped and counted in ``dropped``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from serving.experiments.background import BoundedWorker
from serving.experiments.records import FeatureLogging, PredictionRecord

Predict = Callable[[str, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ShadowJob:
    request_id: str
    ts: int
    entity_key: str
    x: np.ndarray
    versions: tuple[str, ...]
    features_hash: str


class ShadowRunner:
    def __init__(
        self,
        model: str,
        predict: Predict,
        emit: Callable[[ShadowBatch], object],
        features: FeatureLogging = "hash",
        maxsize: int = 1024,
        batch: int = 64,
        linger_s: float = 0.005,
        nice: int = 19,
    ) -> None:
        self.model = model
        self._predict = predict
        self._emit = emit
        self._features = features
        self._worker: BoundedWorker[ShadowJob] = BoundedWorker(
            self._run,
            maxsize=maxsize,
            batch=batch,
            name=f"shadow-{model}",
            linger_s=linger_s,
            nice=nice,
        )

    def submit(self, job: ShadowJob) -> bool:
        return self._worker.submit(job)

    @property
    def dropped(self) -> int:
        return self._worker.dropped

    @property
    def scored(self) -> int:
        return self._worker.handled

    def close(self, timeout: float = 10.0) -> None:
        self._worker.close(timeout)

    def _run(self, jobs: list[ShadowJob]) -> None:
        by_version: dict[str, list[ShadowJob]] = {}
        for j in jobs:
            for v in j.versions:
                by_version.setdefault(v, []).append(j)
        for version, group in by_version.items():
            x = np.vstack([j.x for j in group])
            t0 = time.perf_counter()
            error = None
            try:
                scores = np.asarray(self._predict(version, x), dtype=float).reshape(len(group))
            except Exception as e:  # a broken shadow is logged, never raised to anyone
                scores = np.full(len(group), np.nan)
                error = f"{type(e).__name__}: {e}"
            per_row_ms = (time.perf_counter() - t0) * 1000 / len(group)
            self._emit(ShadowBatch(self.model, version, group, scores, per_row_ms, error,
                                   self._features == "vector"))


@dataclass(frozen=True)
class ShadowBatch:
    """One predict call's results; expanded into records by whoever logs them.

    Building the records is Python work that holds the GIL. The shadow thread runs at low CPU
    priority, and a low-priority thread holding the GIL would stall requests (priority
    inversion), so it hands over this batch and the logging thread builds the records.
    """

    model: str
    version: str
    jobs: list[ShadowJob]
    scores: np.ndarray
    per_row_ms: float
    error: str | None
    with_vectors: bool

    def records(self) -> list[PredictionRecord]:
        return [
            PredictionRecord(
                request_id=j.request_id,
                ts=j.ts,
                entity_key=j.entity_key,
                model=self.model,
                version=self.version,
                role="shadow",
                arm="shadow",
                score=None if self.error else float(s),
                latency_ms=self.per_row_ms,
                error=self.error,
                features_hash=j.features_hash,
                features=j.x.tolist() if self.with_vectors else None,
            )
            for j, s in zip(self.jobs, self.scores, strict=True)
        ]
