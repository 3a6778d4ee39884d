"""Redis layout of online tiles (pure: names, no client).

One Redis hash per entity: ``tessera:{entity}:{key}``. One hash field per (view version, hop):
``{view}@{version}:{hop}``, whose value is a ring of tiles (its bytes: ``features.online.codec``)
of ``N = longest window of that hop / hop + 2`` slots, so the ring holds every tile a read at
"now" can need; an older tile in a slot is simply overwritten. The worker writes whole fields
(absolute values, never increments), so a replayed batch rewrites the same bytes. Keys expire
after the longest window plus slack: memory is bounded by active entities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

from features.definitions import Entity, FeatureView
from features.online.codec import RingCodec
from features.semantics.aggregations import IR, get_aggregation
from features.semantics.windows import format_duration

KEY_PREFIX = "tessera"


def entity_key(entity: Entity, values: tuple | list) -> str:
    """Redis key of one entity. Single keys stay readable; composite keys are JSON lists."""
    if len(values) != len(entity.keys):
        raise ValueError(
            f"entity {entity.name!r} has keys {list(entity.keys)}, got {len(values)} value(s)"
        )
    if len(values) == 1:
        return f"{KEY_PREFIX}:{entity.name}:{values[0]}"
    return f"{KEY_PREFIX}:{entity.name}:{json.dumps([str(v) for v in values])}"


OFFSET_KEY_PREFIX = f"{KEY_PREFIX}:offsets:"


def offset_key(group: str, topic: str, partition: int) -> str:
    """Where the worker stores the last Kafka offset whose effects are in Redis."""
    return f"{OFFSET_KEY_PREFIX}{group}:{topic}:{partition}"


@dataclass(frozen=True)
class Watermark:
    """The value of an offset key: the last offset applied, the log epoch it belongs to (a
    recreated topic or a broker that lost data starts a new epoch, with offsets from 0) and a
    fingerprint of that record, to tell whether the record at that offset is still the same."""

    offset: int = -1
    epoch: int = 0
    fingerprint: int = 0

    def encode(self) -> bytes:
        return f"{self.offset}:{self.epoch}:{self.fingerprint}".encode()

    @classmethod
    def decode(cls, raw: bytes | str | None) -> Watermark | None:
        """None when the key is absent; a bare integer (the format before epochs) is epoch 0."""
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        parts = text.split(":")
        if len(parts) == 1:
            return cls(int(parts[0]))
        return cls(int(parts[0]), int(parts[1]), int(parts[2]))


def applied_offset(raw: bytes | str | None) -> int:
    """The last offset applied according to an offset key's value (-1 when absent)."""
    w = Watermark.decode(raw)
    return -1 if w is None else w.offset


def ring_slots(window: int, hop: int, max_future: int) -> int:
    """Tiles a ring keeps: a read at "now" folds the ``window / hop + 1`` newest complete and
    current tiles, and an event up to ``max_future`` ahead may already have moved the ring's
    newest tile ``ceil(max_future / hop)`` tiles past the current one (at least one is kept
    spare, the layout before ``max_future`` existed)."""
    ahead = max(1, -(-max_future // hop))
    return window // hop + 1 + ahead


@dataclass(frozen=True)
class HopLayout:
    """The ring of one (view, hop): which IR parts a record holds and at which offsets."""

    field: str
    hop: int
    slots: int
    parts: tuple[tuple[str, str | None], ...]
    offsets: tuple[int, ...]
    width: int

    @cached_property
    def codec(self) -> RingCodec:
        """This ring's bytes (``features.online.codec``)."""
        return RingCodec(self.width, self.slots)

    def empty_values(self) -> list[float]:
        out: list[float] = []
        for fn, _ in self.parts:
            out.extend(get_aggregation(fn).empty())
        return out

    def part(self, fn: str, field: str | None) -> int:
        return self.parts.index((fn, field))

    def encode(self, newest_ts: int, tiles: dict[int, list[float] | IR]) -> bytes:
        """Pack a ring. ``tiles`` maps tile index -> flat IR values; the newest N are kept."""
        return self.codec.encode(newest_ts, tiles, self.empty_values())

    def decode_newest(self, blob: bytes) -> int:
        return self.codec.newest(blob)

    def decode(self, blob: bytes) -> tuple[int, dict[int, tuple[float, ...]]]:
        """Unpack a ring into (newest event time, {tile index: flat IR values})."""
        return self.codec.decode(blob)


@dataclass(frozen=True)
class FeatureSlot:
    """Where one feature lives: its hop ring, the IR slice inside a record, and its window."""

    name: str
    fn: str
    hop: HopLayout
    start: int
    stop: int
    window: int


class ViewLayout:
    """Tile layout of a windowed view version, derived only from its definition."""

    def __init__(self, view: FeatureView) -> None:
        self.view = view
        self.hops: dict[int, HopLayout] = {}
        for hop, feats in view.hops().items():
            parts: list[tuple[str, str | None]] = []
            for f in feats:
                key = (f.fn, f.field if get_aggregation(f.fn).needs_field else None)
                if key not in parts:
                    parts.append(key)
            offsets, width = [], 0
            for fn, _ in parts:
                offsets.append(width)
                width += get_aggregation(fn).width
            longest = max(f.window for f in feats)
            self.hops[hop] = HopLayout(
                field=f"{view.name}@{view.version}:{format_duration(hop)}",
                hop=hop,
                slots=ring_slots(longest, hop, view.source.max_future_us),
                parts=tuple(parts),
                offsets=tuple(offsets),
                width=width,
            )
        self.features: dict[str, FeatureSlot] = {}
        for f in view.features:
            hl = self.hops[f.hop]
            i = hl.part(f.fn, f.field if get_aggregation(f.fn).needs_field else None)
            start = hl.offsets[i]
            self.features[f.name] = FeatureSlot(
                f.name, f.fn, hl, start, start + get_aggregation(f.fn).width, f.window
            )

    @property
    def fields(self) -> list[str]:
        return [h.field for h in self.hops.values()]

    @property
    def ttl_seconds(self) -> int:
        """Key TTL: the longest window plus its hop plus an hour of slack."""
        longest = max(f.window + f.hop for f in self.view.features)
        return longest // 1_000_000 + 3600


# Inside every entity hash, beside its rings: which offsets of its home partition's streams the
# rings hold ("sid:epoch:offset,..."), written by the same server-side script as the rings, so
# each key's write is fenced and idempotent on its own (no cross-key transaction: works on a
# Redis Cluster). Readers never ask for it.
APPLIED_FIELD = "~applied"

# The online store's own state, one hash beside the entity keys:
#   generation            set by every worker write; absent = the store is empty or lost its data
#   rebuilding:<what>     present while a worker rebuilds rings from the event log (value: JSON
#                         with the reason and when it started); removed when done
STORE_KEY = f"{KEY_PREFIX}:store"
GENERATION_FIELD = "generation"
REBUILDING_PREFIX = "rebuilding:"


def store_readiness(fields: dict[bytes | str, bytes | str]) -> tuple[bool, str]:
    """Whether the online store can serve, from ``HGETALL tessera:store``, and why not."""
    names = {f.decode() if isinstance(f, bytes) else f for f in fields}
    rebuilding = sorted(n[len(REBUILDING_PREFIX):] for n in names
                        if n.startswith(REBUILDING_PREFIX))
    if rebuilding:
        return False, f"rebuilding the online store from the event log: {', '.join(rebuilding)}"
    if GENERATION_FIELD not in names:
        return False, ("the online store holds no data (no worker has written it yet, or Redis "
                       "lost its data and a worker has not rebuilt it yet)")
    return True, "ok"
