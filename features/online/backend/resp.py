"""Many ring-writing commands in Redis's wire format at once, from fixed-size ring records.

A batch writes one command per touched entity -- ``HSET key field1 ring1 ... fieldP ringP``,
or the fenced script call ``EVALSHA sha 1 key expected new ttl field1 ring1 ...``
(``features.online.backend``) -- thousands of commands of a few KB each. Packing them one by one
(redis-py's pipeline, or even hiredis's ``pack_command``) copies every ring several times
through Python objects. Here the commands of all entities whose leading arguments have the same
length are one ``uint8`` matrix -- a row per command, the constant parts broadcast, the leading
arguments and rings copied in as columns -- so the bytes are written once. Entities where some
ring has never seen an event (nothing to write for it) are packed one by one; that is rare.
"""

from __future__ import annotations

import numpy as np


def bulk(b: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(b), b)


def ring_commands(
    heads: list[bytes], head_args: int, fields: list[bytes], rings: list[np.ndarray],
    present: np.ndarray,
) -> tuple[list[bytes | memoryview], list[int]]:
    """RESP for ``<heads[i]> fields[j] rings[j][i] ...`` over the plans ``j`` where
    ``present[i, j]``; ``heads[i]``: the command's first ``head_args`` arguments, each
    already a bulk string (``bulk``); ``rings[j]`` is a ``(n, size_j)`` uint8 matrix. Keys
    without any present ring get no command. Returns the buffers and the key index of each
    command, in the order the buffers hold them (the order their replies come back)."""
    full = present.all(axis=1)
    out: list[bytes | memoryview] = []
    order: list[int] = []
    for i in np.nonzero(~full & present.any(axis=1))[0].tolist():
        parts = [heads[i]]
        for j, fld in enumerate(fields):
            if present[i, j]:
                parts += [bulk(fld), bulk(rings[j][i].tobytes())]
        out.append(b"*%d\r\n" % (head_args + len(parts) - 1) + b"".join(parts))
        order.append(i)
    idx = np.nonzero(full)[0]
    if not len(idx):
        return out, order
    lens = np.fromiter((len(heads[i]) for i in idx.tolist()), dtype=np.int64, count=len(idx))
    tail: list[tuple[bytes | None, np.ndarray | None]] = []  # constant bytes or ring column
    for j, fld in enumerate(fields):
        tail.append((bulk(fld) + b"$%d\r\n" % rings[j].shape[1], None))
        tail.append((None, rings[j]))
        tail.append((b"\r\n", None))
    array = b"*%d\r\n" % (head_args + 2 * len(fields))
    for length in np.unique(lens).tolist():
        rows = idx[lens == length]
        m = len(rows)
        width = len(array) + length + sum(
            len(c) if c is not None else r.shape[1] for c, r in tail)
        buf = np.empty((m, width), dtype=np.uint8)
        at = len(array)
        buf[:, :at] = np.frombuffer(array, dtype=np.uint8)
        buf[:, at:at + length] = np.frombuffer(
            b"".join([heads[i] for i in rows.tolist()]), dtype=np.uint8).reshape(m, length)
        at += length
        for const, ring in tail:
            if const is not None:
                buf[:, at:at + len(const)] = np.frombuffer(const, dtype=np.uint8)
                at += len(const)
            else:
                buf[:, at:at + ring.shape[1]] = ring[rows]
                at += ring.shape[1]
        out.append(memoryview(buf.reshape(-1)))
        order += rows.tolist()
    return out, order


_HSET = bulk(b"HSET")


def hset_commands(
    keys: list[bytes], fields: list[bytes], rings: list[np.ndarray], present: np.ndarray
) -> list[bytes | memoryview]:
    """RESP for ``HSET keys[i] fields[j] rings[j][i] ...`` over the plans ``j`` where
    ``present[i, j]``; ``rings[j]`` is a ``(n, size_j)`` uint8 matrix. Keys without any
    present ring get no command."""
    return ring_commands([_HSET + bulk(k) for k in keys], 2, fields, rings, present)[0]
