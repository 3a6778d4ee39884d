"""The byte format of a tile ring: the one place it is written down (pure: no client).

A ring is the value of one hash field (``features.online.layout``: which field, which IR parts,
how many slots)::

    header  <q   newest event time applied to this ring (µs; NO_EVENT: none yet)
    slots   N × (<q tile index, width × <d IR floats)   slot = tile index mod N

Every reader and writer takes its view of those bytes from ``RingCodec``: the ``struct``
formats the serving fold unpacks (``features.online.fastfold``), the numpy record the worker
folds whole batches in (``streams.worker.tiles``: row ``r`` of an array of ``dtype`` *is* the
stored ring, so decoding is ``frombuffer`` and encoding ``tobytes``), and ``encode``/``decode``
for everything else. Before, each of the three described the format itself; now a change of
the format is a change here, and ``tests/features/online/test_codec.py`` checks the views agree.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from functools import cached_property

import numpy as np

EMPTY_TILE = -(2**63)  # the tile index of a slot that holds no tile
NO_EVENT = -(2**63)  # the header of a ring no event has reached
HEADER = struct.Struct("<q")


class RingCodec:
    """The bytes of one ring shape: ``slots`` tiles of ``width`` IR floats each."""

    def __init__(self, width: int, slots: int) -> None:
        self.width = width
        self.slots = slots

    @cached_property
    def record(self) -> struct.Struct:
        """One slot: tile index, then its IR values."""
        return struct.Struct(f"<q{self.width}d")

    @cached_property
    def values(self) -> struct.Struct:
        """A slot's IR values alone (unpacked at ``value_offsets[slot]``)."""
        return struct.Struct(f"<{self.width}d")

    @cached_property
    def ring(self) -> struct.Struct:
        """The whole ring in one format (its ``size`` is the stored length)."""
        return struct.Struct("<q" + ("q" + "d" * self.width) * self.slots)

    @cached_property
    def heads(self) -> struct.Struct:
        """The header and every slot's tile index, the IR values skipped: what a read unpacks
        first, to decode only the tiles inside its windows."""
        return struct.Struct("<q" + ("q" + f"{8 * self.width}x") * self.slots)

    @property
    def size(self) -> int:
        return HEADER.size + self.slots * self.record.size

    @cached_property
    def value_offsets(self) -> list[int]:
        """Byte offset of each slot's IR values."""
        return [HEADER.size + s * self.record.size + 8 for s in range(self.slots)]

    @cached_property
    def dtype(self) -> np.dtype:
        """One ring as a numpy record (``newest``, ``t[slot]`` = (``i`` index, ``v`` values)):
        ``np.frombuffer(blob, dtype)`` reads stored rings, ``tobytes`` writes them."""
        tile = np.dtype([("i", "<i8"), ("v", "<f8", (self.width,))])
        dt = np.dtype([("newest", "<i8"), ("t", tile, (self.slots,))])
        assert dt.itemsize == self.size, "the numpy record and the struct format disagree"
        return dt

    def encode(self, newest_ts: int, tiles: Mapping[int, Sequence[float]],
               empty_values: Sequence[float]) -> bytes:
        """Pack a ring. ``tiles`` maps tile index -> flat IR values; only the newest ``slots``
        are kept (an older tile's slot belongs to a newer one); unused slots hold
        ``EMPTY_TILE`` and ``empty_values``."""
        rec = self.record
        buf = bytearray(self.size)
        HEADER.pack_into(buf, 0, newest_ts)
        for s in range(self.slots):
            rec.pack_into(buf, HEADER.size + s * rec.size, EMPTY_TILE, *empty_values)
        if tiles:
            top = max(tiles)
            for idx, vals in tiles.items():
                if idx > top - self.slots:
                    rec.pack_into(buf, HEADER.size + (idx % self.slots) * rec.size, idx, *vals)
        return bytes(buf)

    @staticmethod
    def newest(blob: bytes) -> int:
        return HEADER.unpack_from(blob, 0)[0]

    def decode(self, blob: bytes) -> tuple[int, dict[int, tuple[float, ...]]]:
        """Unpack a ring into (newest event time, {tile index: flat IR values})."""
        (newest,) = HEADER.unpack_from(blob, 0)
        tiles = {}
        for idx, *vals in self.record.iter_unpack(memoryview(blob)[HEADER.size:]):
            if idx != EMPTY_TILE:
                tiles[idx] = tuple(vals)
        return newest, tiles
