"""The ring codec's views of the bytes agree: struct formats, numpy record, encode/decode."""

import numpy as np
import pytest

from features import Aggregate, Entity, EventSource, FeatureView
from features.online.codec import EMPTY_TILE, NO_EVENT, RingCodec
from features.online.layout import ViewLayout

user = Entity("user", keys=["user_id"])
src = EventSource("tx", {"user_id": "string", "amount": "float", "ts": "timestamp"}, "ts", user)
VIEW = FeatureView("spend", src, [Aggregate("sum", ["1h", "24h"], field="amount"),
                                  Aggregate("mean", ["1h"], field="amount"),
                                  Aggregate("count", ["10m"])])


@pytest.mark.parametrize("width,slots", [(1, 3), (3, 14), (5, 26)])
def test_views_of_the_bytes_agree(width, slots):
    codec = RingCodec(width, slots)
    rng = np.random.default_rng(width * slots)
    tiles = {int(i): [float(v) for v in rng.normal(size=width)]
             for i in rng.choice(1000, size=slots, replace=False) + 5000}
    tiles = {i: v for i, v in tiles.items() if i > max(tiles) - slots}
    blob = codec.encode(123_456, tiles, [0.0] * width)
    assert len(blob) == codec.size == codec.ring.size == codec.heads.size
    assert codec.dtype.itemsize == codec.size
    newest, back = codec.decode(blob)
    assert newest == 123_456 == codec.newest(blob)
    assert back == {i: tuple(v) for i, v in tiles.items()}
    arr = np.frombuffer(blob, dtype=codec.dtype)[0]
    heads = codec.heads.unpack(blob)
    assert heads[0] == arr["newest"]
    assert list(heads[1:]) == arr["t"]["i"].tolist()
    for s, off in enumerate(codec.value_offsets):
        assert codec.values.unpack_from(blob, off) == tuple(arr["t"]["v"][s].tolist())
        if arr["t"]["i"][s] != EMPTY_TILE:
            assert s == arr["t"]["i"][s] % slots
    assert arr.tobytes() == blob


def test_empty_ring_and_layout_delegate():
    for hl in ViewLayout(VIEW).hops.values():
        empty = hl.encode(NO_EVENT, {})
        newest, tiles = hl.decode(empty)
        assert newest == NO_EVENT and tiles == {}
        assert len(empty) == hl.codec.size
        ring = np.frombuffer(empty, dtype=hl.codec.dtype)[0]
        assert (ring["t"]["i"] == EMPTY_TILE).all()
        assert ring["t"]["v"].reshape(-1).tolist() == hl.empty_values() * hl.slots
