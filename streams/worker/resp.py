"""Many ``HSET`` commands in Redis's wire format at once, from fixed-size ring records.

A batch writes one ``HSET key field1 ring1 ... fieldP ringP`` per touched entity: thousands of
commands of a few KB each. Packing them one by one (redis-py's pipeline, or even hiredis's
``pack_command``) copies every ring several times through Python objects. Here the commands of
all entities whose keys have the same length are one ``uint8`` matrix — a row per command, the
constant parts broadcast, the keys and rings copied in as columns — so the bytes are written
once. Entities where some ring has never seen an event (nothing to write for it) are packed
one by one; that is rare.
"""

from __future__ import annotations

import hiredis
import numpy as np


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def hset_commands(
    keys: list[bytes], fields: list[bytes], rings: list[np.ndarray], present: np.ndarray
) -> list[bytes | memoryview]:
    """RESP for ``HSET keys[i] fields[j] rings[j][i] ...`` over the plans ``j`` where
    ``present[i, j]``; ``rings[j]`` is a ``(n, size_j)`` uint8 matrix. Keys without any
    present ring get no command."""
    full = present.all(axis=1)
    out: list[bytes | memoryview] = []
    for i in np.nonzero(~full & present.any(axis=1))[0].tolist():
        args = [b"HSET", keys[i]]
        for j, fld in enumerate(fields):
            if present[i, j]:
                args += [fld, rings[j][i].tobytes()]
        out.append(hiredis.pack_command(tuple(args)))
    idx = np.nonzero(full)[0]
    if not len(idx):
        return out
    lens = np.fromiter((len(keys[i]) for i in idx.tolist()), dtype=np.int64, count=len(idx))
    parts: list[tuple[bytes | None, np.ndarray | None]] = []  # constant bytes or ring column
    for j, fld in enumerate(fields):
        parts.append((_bulk(fld) + b"$%d\r\n" % rings[j].shape[1], None))
        parts.append((None, rings[j]))
        parts.append((b"\r\n", None))
    for length in np.unique(lens).tolist():
        rows = idx[lens == length]
        m = len(rows)
        head = b"*%d\r\n$4\r\nHSET\r\n$%d\r\n" % (2 + 2 * len(fields), length)
        width = len(head) + length + 2 + sum(
            len(c) if c is not None else r.shape[1] for c, r in parts)
        buf = np.empty((m, width), dtype=np.uint8)
        at = len(head)
        buf[:, :at] = np.frombuffer(head, dtype=np.uint8)
        buf[:, at:at + length] = np.frombuffer(
            b"".join([keys[i] for i in rows.tolist()]), dtype=np.uint8).reshape(m, length)
        at += length
        buf[:, at:at + 2] = np.frombuffer(b"\r\n", dtype=np.uint8)
        at += 2
        for const, ring in parts:
            if const is not None:
                buf[:, at:at + len(const)] = np.frombuffer(const, dtype=np.uint8)
                at += len(const)
            else:
                buf[:, at:at + ring.shape[1]] = ring[rows]
                at += ring.shape[1]
        out.append(memoryview(buf.reshape(-1)))
    return out
