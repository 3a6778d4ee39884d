"""The request path of an experiment: pick the arm, score, log, hand the vector to the shadows.

The scorer calls ``ExperimentRouter.score`` with an entity key and the feature vector it already
fetched; the router needs only a ``predict(version, X)`` callable from it (and optionally
``predict_one(version, x)``, e.g. the scorer's fast single-row path; shadows always use the
batched ``predict``). On the request thread it does one assignment hash, one predict, one
non-blocking log put and one non-blocking shadow put. ``shadows`` replaces the in-process
shadow thread, e.g. with a ``ProcessShadowRunner`` (what the scorer uses: see ``wiring``).
``log`` receives ``PredictionRecord``s and ``ShadowBatch``es (``.records()`` expands them;
``KafkaRecordLog`` does so on its own thread). The spec is re-read when a newer revision
appears (checked at most every ``reload_every_s``), so `tessera deploy`, promote, rollback and
guardrail stops apply without a restart.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from serving.experiments.assign import assign
from serving.experiments.errors import ExperimentError
from serving.experiments.guardrails import GuardrailMonitor
from serving.experiments.records import FeatureLogging, PredictionRecord, feature_hash, now_us
from serving.experiments.shadow import Predict, ShadowBatch, ShadowJob, ShadowRunner
from serving.experiments.shadow_process import ProcessShadowRunner
from serving.experiments.spec import CHAMPION, DeploymentSpec, DeploymentStore


@dataclass(frozen=True)
class Served:
    """What the caller returns: the score and which arm/version produced it."""

    request_id: str
    arm: str
    version: str
    score: float
    latency_ms: float


def _drop(_: object) -> None:
    return None


class ExperimentRouter:
    def __init__(
        self,
        store: DeploymentStore,
        name: str,
        predict: Predict,
        log: Callable[[PredictionRecord | ShadowBatch], object] = _drop,
        features: FeatureLogging = "hash",
        shadow_queue: int = 1024,
        shadow_batch: int = 64,
        reload_every_s: float = 1.0,
        predict_one: Callable[[str, np.ndarray], float] | None = None,
        shadows: ShadowRunner | ProcessShadowRunner | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self._predict = predict
        self._one = predict_one or (lambda v, x: predict(v, x.reshape(1, -1))[0])
        self._log = log
        # what the prediction log keeps of each vector: "hash" or "vector" (drift monitoring
        # needs the values); may be changed while serving
        self.feature_logging: FeatureLogging = features
        self._reload_every = reload_every_s
        self._spec = store.current(name)
        self._checked = time.monotonic()
        self._guard = GuardrailMonitor(self._spec.guardrails)
        self.shadows = shadows or ShadowRunner(
            name, predict, log, features=features, maxsize=shadow_queue, batch=shadow_batch
        )

    @property
    def spec(self) -> DeploymentSpec:
        return self._spec

    def refresh(self) -> DeploymentSpec:
        """Load the newest spec revision if it changed (hot reload)."""
        self._checked = time.monotonic()
        if self.store.revision(self.name) != self._spec.revision:
            self._spec = self.store.current(self.name)
            self._guard = GuardrailMonitor(self._spec.guardrails)
        return self._spec

    def score(self, entity_key: str, x: np.ndarray, request_id: str | None = None) -> Served:
        if time.monotonic() - self._checked > self._reload_every:
            self.refresh()
        spec = self._spec
        rid = request_id or uuid.uuid4().hex
        arm, version = assign(spec, entity_key)
        ts = now_us()
        t0 = time.perf_counter()
        try:
            score = float(self._one(version, x))
            error = None
        except Exception as e:
            if arm == CHAMPION:
                raise
            # a failing challenger falls back to the champion; the failure counts against it
            error = f"{type(e).__name__}: {e}"
            score = float(self._one(spec.champion, x))
        latency = (time.perf_counter() - t0) * 1000
        fhash = feature_hash(x)
        self._log(
            PredictionRecord(
                request_id=rid,
                ts=ts,
                entity_key=entity_key,
                model=self.name,
                version=version if error is None else spec.champion,
                role="champion" if arm == CHAMPION else "arm",
                arm=arm if error is None else CHAMPION,
                score=score,
                latency_ms=latency,
                error=error,
                features_hash=fhash,
                features=x.tolist() if self.feature_logging == "vector" else None,
            )
        )
        if arm != CHAMPION:
            why = self._guard.observe(arm, latency, error is not None)
            if why is not None:
                try:
                    self.stop_arm(arm, why, who="guardrail")
                except ExperimentError:  # another thread or process wrote a revision first
                    self.refresh()
        if spec.shadows:
            self.shadows.submit(ShadowJob(rid, ts, entity_key, x, spec.shadows, fhash))
        return Served(rid, arm if error is None else CHAMPION, version, score, latency)

    def stop_arm(self, arm: str, why: str, who: str) -> DeploymentSpec:
        """Stop ``arm`` (its entities go back to the champion) as a new audited spec revision."""
        spec = self.refresh()
        if spec.arm(arm).stopped is not None:
            return spec
        arms = tuple(replace(a, stopped=why) if a.name == arm else a for a in spec.arms)
        self._spec = self.store.save(replace(spec, arms=arms), why=f"stopped {arm}: {why}", who=who)
        return self._spec

    def close(self) -> None:
        self.shadows.close()
