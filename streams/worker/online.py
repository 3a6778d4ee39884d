"""The online half of a batch: skip what Redis already has, fold the rest, commit fenced.

State per partition: the Redis watermark (last offset whose effects are in Redis) and the
decoded rings of every entity the partition has touched. Entities are partitioned by key, so
the partition's owner is the only writer of those rings and the cache stays true — unless the
partition moved, which the watermark fence detects (then the cache is dropped and reloaded).

Late events: an event with ``ts < wall clock - (longest window + its hop + allowed lateness)``
is not
applied online (counted in ``late``); it is still written to the offline log. No read at "now"
could see it, so serving and the offline recomputation at any ``t >= now`` agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from features.definitions import EventSource, FeatureView
from features.online.layout import ViewLayout, entity_key, offset_key
from streams.worker.redis_sink import RedisSink
from streams.worker.tiles import HopPlan, Ring, fold, plan_views


@dataclass
class PartitionState:
    watermark: int
    rings: dict[str, list[Ring]] = field(default_factory=dict)


@dataclass
class OnlineStats:
    applied: int = 0
    skipped_replay: int = 0
    late: int = 0
    fence_retries: int = 0
    newest_ts: int | None = None  # µs, newest event applied (freshness metric)


class OnlineWriter:
    """Applies decoded events of one source to Redis, exactly once in effect."""

    def __init__(
        self,
        source: EventSource,
        views: list[FeatureView],
        sink: RedisSink,
        group: str,
        allowed_lateness_us: int,
    ) -> None:
        self.source = source
        self.sink = sink
        self.group = group
        self.plans: list[HopPlan] = plan_views(views)
        self.fields = [p.field for p in self.plans]
        # a window at t reaches back up to W + h (its tail is aligned to the hop grid)
        self.horizon_us = max(f.window + f.hop for v in views for f in v.features) + (
            allowed_lateness_us
        )
        self.ttl_s = max(ViewLayout(v).ttl_seconds for v in views)
        self.state: dict[int, PartitionState] = {}
        self.stats = OnlineStats()
        keys = source.entity.keys
        ent = source.entity
        if len(keys) == 1:  # same string as entity_key(), without its per-call checks
            prefix, k0 = entity_key(ent, ("",)), keys[0]
            self._key = lambda ev: prefix + str(ev[k0])
        else:
            self._key = lambda ev: entity_key(ent, [ev[k] for k in keys])

    def forget(self, partitions: list[int]) -> None:
        """Drop cached state (partitions revoked): memory only, correctness is the fence's."""
        for p in partitions:
            self.state.pop(p, None)

    def watermark(self, partition: int) -> int:
        """Last offset whose effects are in Redis (loaded on first use)."""
        st = self.state.get(partition)
        if st is None:
            (wm,) = self.sink.watermarks([self._offset_key(partition)])
            st = self.state[partition] = PartitionState(wm)
        return st.watermark

    def _offset_key(self, partition: int) -> str:
        return offset_key(self.group, self.source.topic, partition)

    def apply(self, batch: dict[int, list[tuple[int, dict | None]]]) -> None:
        """Apply ``{partition: [(offset, event or None if invalid)]}`` (offsets ascending)."""
        parts = [p for p, recs in batch.items() if recs]
        if not parts:
            return
        missing = [p for p in parts if p not in self.state]
        if missing:
            wms = self.sink.watermarks([self._offset_key(p) for p in missing])
            for p, wm in zip(missing, wms, strict=True):
                self.state[p] = PartitionState(wm)
        while True:
            writes, fences, counts = self._fold(batch, parts)
            stale = self.sink.commit(writes, self.ttl_s, fences)
            if stale is None:
                self.stats.applied += counts[0]
                self.stats.skipped_replay += counts[1]
                self.stats.late += counts[2]
                if counts[3] is not None:
                    self.stats.newest_ts = max(self.stats.newest_ts or counts[3], counts[3])
                for p in parts:
                    st = self.state[p]
                    st.watermark = max(st.watermark, batch[p][-1][0])
                return
            # Another worker wrote these partitions: our rings may be stale (and this batch's
            # folds are in them). Reload everything from Redis and redo the batch.
            self.stats.fence_retries += 1
            for p in parts:
                self.state[p] = PartitionState(stale[self._offset_key(p)])

    def _fold(self, batch, parts):
        horizon = time.time_ns() // 1000 - self.horizon_us
        tsf = self.source.timestamp_field
        applied = skipped = late = 0
        newest = -(2**63)
        todo: list[tuple[PartitionState, str, dict, int, int]] = []
        for p in parts:
            st = self.state[p]
            for offset, ev in batch[p]:
                if ev is None:
                    continue
                if offset <= st.watermark:
                    skipped += 1
                    continue
                ts = ev[tsf]
                if ts < horizon:
                    late += 1
                    continue
                if ts > newest:
                    newest = ts
                todo.append((st, self._key(ev), ev, ts, offset))
        # load the rings this batch needs and the cache lacks, in one round trip
        need: dict[str, PartitionState] = {}
        for st, key, *_ in todo:
            if key not in st.rings:
                need[key] = st
        if need:
            keys = list(need)
            for key, blobs in zip(keys, self.sink.load(keys, self.fields), strict=True):
                need[key].rings[key] = [
                    plan.decode(b) for plan, b in zip(self.plans, blobs, strict=True)
                ]
        touched: dict[str, list[Ring]] = {}
        plans = self.plans
        for st, key, ev, ts, offset in todo:
            rings = st.rings[key]
            fold(rings, plans, ev, ts, offset)
            touched[key] = rings
            applied += 1
        writes = {
            key: {p.field: p.encode(r) for p, r in zip(plans, rings, strict=True)
                  if r.newest != -(2**63)}
            for key, rings in touched.items()
        }
        fences = {
            self._offset_key(p): (
                self.state[p].watermark,
                max(self.state[p].watermark, batch[p][-1][0]),
            )
            for p in parts
        }
        return writes, fences, (applied, skipped, late, newest if todo else None)
