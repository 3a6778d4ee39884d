"""Online/offline skew check: do the Redis tiles and the event log agree at time ``t``?

Online values come from ``OnlineStore`` (tile rings folded at ``t``); offline values are
recomputed from the event log's rows with the scalar algebra of ``features.semantics`` —
events with ``start(t) <= ts < t``, merged in (event time, offset) order. Aggregations marked
``exact`` (count, min, max, last, first) must match exactly; the others to a relative 1e-9
(tiles add in a different grouping).

Valid for ``t`` after the newest event the worker applied, which is how serving reads ("now"):
late events (see docs/streams.md) are in the log but never online, and fall outside every
window at such ``t``. Earlier times are exact or refused by the online read
(``InexactReadError``), never compared with wrong online values.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from features.definitions import BatchFeatureView, FeatureRepo, FeatureView
from features.offline.event_log import EventLog
from features.online.read import OnlineStore
from features.semantics.aggregations import AGGREGATIONS
from features.semantics.windows import in_window, window_start

EXACT = {name for name, agg in AGGREGATIONS.items() if agg.exact}
REL_TOL = 1e-9


@dataclass
class Mismatch:
    entity: dict[str, Any]
    feature: str
    online: Any
    offline: Any


@dataclass
class SkewReport:
    view: str
    at: int
    entities: int
    features: int
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def agree(fn: str, online: Any, offline: Any) -> bool:
    if online is None or offline is None:
        return online is None and offline is None
    if fn in EXACT:
        return online == offline
    return math.isclose(online, offline, rel_tol=REL_TOL, abs_tol=1e-12)


def offline_values(view: FeatureView, events: list[dict], t: int) -> list[Any]:
    """Each feature of ``view`` at ``t`` from one entity's events (dicts with the timestamp
    field as int µs and ``_offset``)."""
    tsf = view.source.timestamp_field
    ordered = sorted(events, key=lambda e: (e[tsf], e["_offset"]))
    out = []
    for f in view.features:
        agg = f.aggregation
        acc = agg.empty()
        for e in ordered:
            ts = e[tsf]
            if in_window(ts, t, f.window, f.hop):
                value = e[f.field] if f.field is not None else 0.0
                acc = agg.merge(acc, agg.prepare(value, ts, e["_offset"]))
        out.append(agg.finalize(acc))
    return out


def skew_check(
    repo: FeatureRepo,
    view_name: str,
    redis_client: Any,
    event_log: EventLog,
    at: int,
    sample: int | None = 100,
    seed: int = 0,
    batch_home: Path | str | None = None,
) -> SkewReport:
    """Compare ``sample`` random entities (None = every entity with events in range) at
    ``at`` (µs since the epoch; ``features.online.read.parse_at`` reads the user's form).
    A batch view goes to ``batch_skew_check`` (its files under ``batch_home``, default the
    event log's home).

    A time the tiles cannot answer exactly raises ``InexactReadError`` (it would only report
    mismatches that are not skew)."""
    view = repo.view(view_name)
    if isinstance(view, BatchFeatureView):
        home = Path(batch_home) if batch_home else Path(event_log.root).parent
        return batch_skew_check(repo, view, redis_client, home, at, sample, seed)
    src = view.source
    start = min(window_start(at, f.window, f.hop) for f in view.features)
    keys = list(src.entity.keys)
    ts = pl.col(src.timestamp_field).dt.epoch("us").alias(src.timestamp_field)
    cols = list({*keys, *(f.field for f in view.features if f.field)})
    df = (
        event_log.scan(src, start, at)
        .select([*cols, ts, pl.col("_offset")])
        .collect()
    )
    entities = df.select(keys).unique().sort(keys).rows()
    if sample is not None and sample < len(entities):
        entities = random.Random(seed).sample(entities, sample)
    report = SkewReport(view.name, at, len(entities), len(view.features))
    if not entities:
        return report
    groups = {k: g for k, g in df.group_by(keys)}
    store = OnlineStore(redis_client, repo, max_entities=max(1000, len(entities)))
    refs = [f"{view.name}:{f.name}" for f in view.features]
    for i in range(0, len(entities), 1000):
        chunk = entities[i:i + 1000]
        rows = [dict(zip(keys, ent, strict=True)) for ent in chunk]
        online = store.get_features(refs, rows, at_us=at)
        for row, ent, values in zip(rows, chunk, online.values, strict=True):
            offline = offline_values(view, groups[tuple(ent)].to_dicts(), at)
            for f, on, off in zip(view.features, values, offline, strict=True):
                if not agree(f.fn, on, off):
                    report.mismatches.append(Mismatch(row, f.name, on, off))
    return report


def batch_skew_check(repo: FeatureRepo, view: BatchFeatureView, redis_client: Any, home: Path,
                     at: int, sample: int | None = 100, seed: int = 0) -> SkewReport:
    """A materialized batch view: its online rows (``tessera materialize``, ttl applied at
    read time) against ``training_set()`` at ``at`` for ``sample`` entities of its file, value
    for value (the same bytes: no tolerance). A stale materialization (newer rows in the file
    up to ``at``) shows as mismatches; a time before a stored row is refused
    (``features.online.batch.BatchReadError``)."""
    from features.offline.training_set import column_name, training_set
    from features.online.materialize import batch_path
    from features.settings import Settings

    keys = list(view.entity.keys)
    entities = (pl.scan_parquet(batch_path(view, home)).select(keys).drop_nulls().unique()
                .sort(keys).collect().rows())
    if sample is not None and sample < len(entities):
        entities = random.Random(seed).sample(entities, sample)
    report = SkewReport(view.name, at, len(entities), len(view.feature_names))
    if not entities:
        return report
    refs = [f"{view.name}:{n}" for n in view.feature_names]
    store = OnlineStore(redis_client, repo, max_entities=max(1000, len(entities)))
    spine = pl.DataFrame([dict(zip(keys, e, strict=True)) for e in entities]).with_columns(
        pl.lit(at).cast(pl.Datetime("us", "UTC")).alias("__skew_t"))
    off = training_set(spine, refs, repo=repo, settings=Settings(home),
                       timestamp_column="__skew_t")
    offline = {}  # as the online read gives them: timestamps in epoch µs
    for n in view.feature_names:
        col = off[column_name(view.name, n)]
        offline[n] = (col.dt.epoch("us") if view.schema[n] == "timestamp" else col).to_list()
    for i in range(0, len(entities), 1000):
        rows = [dict(zip(keys, e, strict=True)) for e in entities[i:i + 1000]]
        online = store.get_features(refs, rows, at_us=at)
        for j, (row, values) in enumerate(zip(rows, online.values, strict=True)):
            for n, on in zip(view.feature_names, values, strict=True):
                want = offline[n][i + j]
                if on != want:
                    report.mismatches.append(Mismatch(row, n, on, want))
    return report
