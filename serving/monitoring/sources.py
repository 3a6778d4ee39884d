"""Where a monitor gets its inputs: the logged predictions and the model's reference.

``PredictionLog`` reads the experiments sink's Parquet files (only committed ones), keeps the
rows one model version served, and expands their feature vectors into named columns.
``registry_lookup`` reads them from the model registry's metadata (``metadata["reference"]``,
written by ``tessera train``), ``ReferenceFiles`` from JSON files next to the models; any
``name -> ModelTarget`` callable can stand in: the monitor only needs a ``ReferenceLookup``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from serving.monitoring.errors import MonitorError
from serving.monitoring.reference import ModelReference
from serving.monitoring.report import expand_features, latest_window


@dataclass(frozen=True)
class ModelTarget:
    """What the monitor compares against: a version, its reference and its feature order."""

    version: str | None
    reference: ModelReference
    feature_names: tuple[str, ...]


ReferenceLookup = Callable[[str], ModelTarget]


class ReferenceFiles:
    """References stored as ``<models>/<name>/reference.json`` (``save`` writes one), where
    ``<models>`` is a folder or a bucket URI (``Settings.models_location``): read and written
    through the model registry's storage, a whole file at a time (a temporary file renamed
    into place on a disk, one PUT in a bucket), so a reader never sees half a reference."""

    def __init__(self, models_dir: Path | str) -> None:
        from serving.registry.storage import ModelStorage

        self.storage = ModelStorage(models_dir)

    @staticmethod
    def _rel(name: str) -> str:
        from serving.registry.registry import check_model_name

        check_model_name(name)
        return f"{name}/reference.json"

    def path(self, name: str) -> str:
        """Where ``name``'s reference is: a local path, or the object's URI path in a bucket."""
        return self.storage.store.path(self._rel(name))

    def names(self) -> list[str]:
        """Models that have a reference file."""
        from features.errors import RegistryError

        out = []
        for n in self.storage.list_dir(""):
            try:
                if self.storage.exists(self._rel(n)):
                    out.append(n)
            except RegistryError:  # not a model folder (a stray file, a temporary name)
                continue
        return out

    def save(self, name: str, version: str | None, reference: ModelReference) -> str:
        body = {"version": version, "reference": reference.to_dict()}
        self.storage.write_bytes(self._rel(name), json.dumps(body).encode())
        return self.path(name)

    def __call__(self, name: str) -> ModelTarget:
        rel = self._rel(name)
        if not self.storage.exists(rel):
            raise MonitorError(
                f"no reference for model {name!r} at {self.storage.uri.rstrip('/')}/{rel}; train "
                "the model with Tessera (its metadata carries one) or save one with "
                "ReferenceFiles.save()"
            )
        return _target(json.loads(self.storage.read_bytes(rel)))


def _target(body: dict) -> ModelTarget:
    ref = ModelReference.from_dict(body["reference"])
    return ModelTarget(body.get("version"), ref, tuple(ref.features))


def load_reference(path: Path | str, name: str = "") -> ModelTarget:
    """Read one reference JSON file written by ``ReferenceFiles.save`` (a local file: the
    ``--reference PATH`` of ``tessera monitor report``)."""
    p = Path(path)
    if not p.exists():
        raise MonitorError(
            f"no reference for model {name!r} at {p}; train the model with Tessera (its "
            "metadata carries one) or save one with ReferenceFiles.save()"
        )
    return _target(json.loads(p.read_text()))


def predictions_dir(offline_dir: Path | str) -> str:
    """Where the experiments sink writes the prediction log (a folder or a URI, under
    ``Settings.offline_location``)."""
    from serving.experiments.report import dataset_dirs

    return dataset_dirs(offline_dir)[0]


def model_window(
    predictions: pl.DataFrame,
    name: str,
    target: ModelTarget,
    rows: int | None = None,
    seconds: float | None = None,
) -> pl.DataFrame:
    """The newest predictions ``name`` served with ``target.version``, one column per feature."""
    df = predictions
    if "model" in df.columns:
        df = df.filter(pl.col("model") == name)
    if "role" in df.columns:  # shadows score the same requests: count each request once
        df = df.filter(pl.col("role") != "shadow")
    if target.version is not None and "version" in df.columns:
        df = df.filter(pl.col("version") == target.version)
    df = latest_window(df, rows=rows, seconds=seconds)
    if "features" in df.columns and df.height:
        return expand_features(df, target.feature_names)
    return df


class PredictionLog:
    """Read the committed prediction log under ``offline_dir`` (``Settings.offline_location``:
    a folder or a bucket URI) for one model at a time."""

    def __init__(self, offline_dir: Path | str) -> None:
        self.folder = predictions_dir(offline_dir)

    def read(self) -> pl.DataFrame:
        from serving.experiments.records import PREDICTION_SCHEMA
        from serving.experiments.sink import read_dataset

        return read_dataset(self.folder, PREDICTION_SCHEMA)  # empty before the first commit


class Registry(Protocol):
    """What the monitor needs of ``serving.registry.ModelRegistry`` (duck-typed)."""

    def get(self, name: str, ref: str = ...) -> Any: ...


def registry_lookup(registry: Registry, ref: str = "champion") -> ReferenceLookup:
    """Look references up in the model registry: the version ``ref`` points at (champion)."""

    def lookup(name: str) -> ModelTarget:
        mv = registry.get(name, ref)
        meta = mv.metadata
        if not meta.get("reference"):
            raise MonitorError(
                f"{name} v{mv.version} has no reference distributions in its metadata; "
                "retrain it with `tessera train` (which stores them) to monitor drift"
            )
        ref_ = ModelReference.from_dict(meta["reference"])
        names = tuple(meta.get("features") or ref_.features)
        return ModelTarget(str(mv.version), ref_, names)

    return lookup


def first_of(*lookups: ReferenceLookup) -> ReferenceLookup:
    """Try each lookup in turn (e.g. the registry, then reference files); the last error wins."""
    from features.errors import TesseraError

    def lookup(name: str) -> ModelTarget:
        err: TesseraError | None = None
        for one in lookups:
            try:
                return one(name)
            except TesseraError as e:
                err = e
        raise err or MonitorError("no reference lookup configured")

    return lookup


def default_lookup(models_dir: Path | str) -> ReferenceLookup:
    """The champion's reference from the registry at ``models_dir`` (a folder or a bucket
    URI), else a reference file there."""
    from serving.registry import ModelRegistry

    return first_of(registry_lookup(ModelRegistry(models_dir)), ReferenceFiles(models_dir))
