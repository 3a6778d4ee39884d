"""Prediction and outcome records: what is logged for every score and every label.

A prediction record carries the feature vector or only its hash (``features="vector"`` or
``"hash"``): the hash is enough to check that a shadow saw exactly what the champion saw, the
vector is what you need to retrain on logged traffic.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import orjson
import pyarrow as pa

Role = Literal["champion", "arm", "shadow"]
FeatureLogging = Literal["vector", "hash"]


@dataclass(frozen=True)
class PredictionRecord:
    request_id: str
    ts: int  # µs since the epoch, UTC
    entity_key: str
    model: str
    version: str
    role: str
    arm: str  # "champion", an arm name, or "shadow"
    score: float | None
    latency_ms: float
    error: str | None = None
    features_hash: str = ""
    features: list[float] | None = None

    def to_bytes(self) -> bytes:
        return orjson.dumps(self)


@dataclass(frozen=True)
class OutcomeRecord:
    """A label, keyed by the request it answers or else by entity and time."""

    label: float
    ts: int
    request_id: str | None = None
    entity_key: str | None = None
    model: str | None = None

    def to_bytes(self) -> bytes:
        return orjson.dumps(self)


PREDICTION_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.int64()),
        ("entity_key", pa.string()),
        ("model", pa.string()),
        ("version", pa.string()),
        ("role", pa.string()),
        ("arm", pa.string()),
        ("score", pa.float64()),
        ("latency_ms", pa.float64()),
        ("error", pa.string()),
        ("features_hash", pa.string()),
        ("features", pa.list_(pa.float64())),
    ]
)

OUTCOME_SCHEMA = pa.schema(
    [
        ("label", pa.float64()),
        ("ts", pa.int64()),
        ("request_id", pa.string()),
        ("entity_key", pa.string()),
        ("model", pa.string()),
    ]
)


def outcome_normalizer(entity_fields: tuple[str, ...] = ()):
    """Row -> outcome row for the sink, accepting both wire forms of a label.

    ``OutcomeRecord`` JSON (``ts`` in µs, ``entity_key`` already joined) and events published by
    ``tessera produce --source outcomes`` (``ts`` as an ISO string, the entity's key columns as
    fields: name them in ``entity_fields`` and they are joined with ``|`` as the scorer does).
    Rows without a label or time return None (counted as malformed).
    """
    from features.errors import SchemaError
    from features.event_schema import parse_timestamp

    def normalize(row: dict) -> dict | None:
        label, ts = row.get("label"), row.get("ts")
        if label is None or ts is None:
            return None
        try:
            ts_us = parse_timestamp(ts, "ts") if isinstance(ts, str) else int(ts)
            label = float(label)
        except (SchemaError, TypeError, ValueError):
            return None
        key = row.get("entity_key")
        if key is None and entity_fields and all(f in row for f in entity_fields):
            key = "|".join(str(row[f]) for f in entity_fields)
        rid = row.get("request_id")
        if rid is None and key is None:
            return None
        return {"label": label, "ts": ts_us, "request_id": rid, "entity_key": key,
                "model": row.get("model")}

    return normalize


def expand(items: list) -> list:
    """Records from a mix of records and batches that expand lazily (``.records()``)."""
    out: list = []
    for it in items:
        if hasattr(it, "records"):
            out.extend(it.records())
        else:
            out.append(it)
    return out


def feature_hash(x: np.ndarray) -> str:
    """Stable 16-hex digest of a float64 feature vector."""
    raw = np.ascontiguousarray(x, dtype=np.float64).tobytes()
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def now_us() -> int:
    return time.time_ns() // 1000
