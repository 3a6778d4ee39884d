"""A retraining spine from the outcome log: what the model was asked, when, and what happened.

The experiments sink keeps every served prediction (entity key, time) and every outcome (label,
by request id or by entity and time). Joined with ``serving.experiments.join`` (the same join the
experiment report uses, so "labelled" means the same thing everywhere), the champion's labelled
predictions are exactly the rows a retrain should learn from: the entity's features as of the
*prediction* time (what the model saw then) and the label that arrived later. The logged
``entity_key`` is the scorer's ``"|".join`` of the entity's key values in key order; it is split
back into the entity's key columns here so the point-in-time builder can join on them.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from serving.monitoring.errors import MonitorError

US_PER_DAY = 86_400_000_000


def entity_keys_of(features: list[str], repo) -> tuple[str, ...]:
    """The key columns of the one entity behind a model's ``view:feature`` refs.

    Plain names (request-time features) are skipped: they were never logged by entity, so a
    model that needs them cannot be retrained from the outcome log alone.
    """
    refs = [f for f in features if ":" in f]
    plain = [f for f in features if ":" not in f]
    if plain:
        raise MonitorError(
            f"features {plain} are request-time inputs, not in the offline store; retrain with "
            "--spine or --training-set holding them"
        )
    entities = {view.entity.name: view.entity for view, _ in repo.resolve(refs)}
    if len(entities) != 1:
        raise MonitorError(
            f"the model's features span entities {sorted(entities)}; the outcome log keys "
            "rows by one entity, so give --spine for a multi-entity model"
        )
    return tuple(next(iter(entities.values())).keys)


def outcome_spine(
    offline_dir: Path | str,
    name: str,
    keys: tuple[str, ...],
    days: float,
    label: str = "label",
    max_delay_s: float = 7 * 86_400,
    now_us: int | None = None,
) -> pl.DataFrame:
    """Labelled predictions of ``name`` over the last ``days``: key columns, ``ts``, label,
    from the logs under ``offline_dir`` (``Settings.offline_location``: a folder or a URI).

    One row per served request (champion or A/B arm; shadows scored the same requests and are
    not counted twice), ``ts`` = the prediction time (UTC datetime), the moving range ending now
    (or at ``now_us``): "the last 30 days" of traffic, so a retrain after a change in the world
    can be limited to what came after it. Outcomes later than ``max_delay_s`` after their
    prediction do not count, as in the experiment report.
    """
    from serving.experiments.join import join_outcomes
    from serving.experiments.records import OUTCOME_SCHEMA, PREDICTION_SCHEMA
    from serving.experiments.report import dataset_dirs
    from serving.experiments.sink import read_dataset

    pred_dir, out_dir = dataset_dirs(offline_dir)
    cols = ["request_id", "ts", "entity_key", "model", "role"]
    served = (pl.col("model") == name) & (pl.col("role") != "shadow")
    preds = read_dataset(pred_dir, PREDICTION_SCHEMA, cols).filter(
        served & pl.col("entity_key").is_not_null()
    )
    outcomes = read_dataset(out_dir, OUTCOME_SCHEMA).filter(
        pl.col("model").is_null() | (pl.col("model") == name)
    )
    joined = join_outcomes(preds, outcomes, max_delay_s).filter(pl.col("label").is_not_null())
    if joined.height == 0:
        raise MonitorError(
            f"no labelled predictions of {name} under {offline_dir}: the prediction log and "
            "outcomes come from `tessera experiment sink`; publish outcomes, or give --spine"
        )
    end = now_us if now_us is not None else time.time_ns() // 1000
    newest = int(joined["ts"].max())
    joined = joined.filter(
        (pl.col("ts") > end - int(days * US_PER_DAY)) & (pl.col("ts") <= end)
    ).unique("request_id", keep="first")
    if joined.height == 0:
        raise MonitorError(
            f"no labelled predictions of {name} in the last {days:g} days (the newest is from "
            f"{(end - newest) / US_PER_DAY:.1f} days ago); widen --days"
        )
    parts = pl.col("entity_key").str.split_exact("|", len(keys) - 1)
    bad = joined.filter(pl.col("entity_key").str.count_matches("|", literal=True) != len(keys) - 1)
    if bad.height:
        raise MonitorError(
            f"{bad.height} logged entity keys of {name} (e.g. {bad['entity_key'][0]!r}) do not "
            f"have the {len(keys)} parts of keys {list(keys)}; was the model served with "
            "another entity?"
        )
    return (
        joined.sort("ts", "request_id")
        .select(
            parts.struct.rename_fields(list(keys)).alias("_k"),
            pl.col("ts").cast(pl.Datetime("us", "UTC")),
            pl.col("label").alias(label),
        )
        .unnest("_k")
    )


def outcome_training_set(
    name: str,
    registry,
    settings,
    days: float,
    label: str = "label",
    repo=None,
    now_us: int | None = None,
) -> Path:
    """``fresh_training_set`` over the outcome spine of ``name``: the champion's features as of
    each labelled prediction, from the offline store, saved in ``training_set_dir`` (a local
    folder: ``<models>/<name>/retrain`` when the models are on a disk)."""
    from features.registry import load_repo
    from serving.monitoring.retrain import fresh_training_set, training_set_dir

    repo = repo if repo is not None else load_repo(settings)
    features = list(registry.get(name).features)
    keys = entity_keys_of(features, repo)
    spine = outcome_spine(settings.offline_location, name, keys, days, label, now_us=now_us)
    out_dir = training_set_dir(settings, name)
    return fresh_training_set(spine, features, out_dir, days, "ts", repo=repo, settings=settings)
