"""Decoding a batch of messages into columns, with exactly ``event_schema.normalize``'s verdicts.

The stream worker decodes tens of thousands of messages per poll; validating them one dict at a
time costs more than everything else it does with them. Here each field is checked as a column
(``type(v) is str`` over a list, timestamps in the SDK's own ISO form parsed by numpy), and only
the rows that fail a fast check go through ``normalize`` — which either accepts them (another
accepted form, e.g. an ISO time with an offset or epoch milliseconds) or rejects them with the
reason the producer would have given. So the fast path only ever accepts what ``normalize``
accepts, with the same values (``tests/features/test_event_columns.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from features.definitions import EventSource
from features.errors import SchemaError
from features.event_schema import normalize, parse_json

_NP_TYPES = {"int": np.int64, "float": np.float64, "bool": np.bool_, "timestamp": np.int64}


@dataclass
class EventColumns:
    """Valid events as columns: strings as lists, numbers, bools and timestamps (µs) as numpy
    arrays; ``offsets`` are their log positions (Kafka offsets), ascending."""

    offsets: np.ndarray
    columns: dict[str, Any]

    def __len__(self) -> int:
        return len(self.offsets)

    def take(self, index: np.ndarray) -> EventColumns:
        """The rows at ``index`` (int positions), in that order."""
        idx = index.tolist()
        return EventColumns(
            self.offsets[index],
            {k: [v[i] for i in idx] if isinstance(v, list) else v[index]
             for k, v in self.columns.items()},
        )

    @classmethod
    def from_events(cls, source: EventSource, rows: Sequence[tuple[int, dict]]) -> EventColumns:
        """Columns of already normalised events ``[(offset, event)]``."""
        cols: dict[str, Any] = {}
        for name, t in source.schema.items():
            vals = [ev[name] for _, ev in rows]
            cols[name] = vals if t == "string" else np.array(vals, dtype=_NP_TYPES[t])
        return cls(np.array([o for o, _ in rows], dtype=np.int64), cols)

    @classmethod
    def concat(cls, parts: Sequence[EventColumns]) -> EventColumns:
        first = parts[0]
        cols = {}
        for k, v in first.columns.items():
            if isinstance(v, list):
                cols[k] = [x for p in parts for x in p.columns[k]]
            else:
                cols[k] = np.concatenate([p.columns[k] for p in parts])
        return cls(np.concatenate([p.offsets for p in parts]), cols)


def _parse(raws: list[bytes]) -> tuple[list, dict[int, SchemaError]]:
    """JSON of every message, one orjson call each: as fast here as one call for a joined
    batch, and a message can never borrow a neighbour's bytes to look valid."""
    objs: list = []
    bad: dict[int, SchemaError] = {}
    loads, err = orjson.loads, orjson.JSONDecodeError
    for i, raw in enumerate(raws):
        try:
            objs.append(loads(raw))
        except err:
            objs.append(None)
            try:  # the slow path names the reason (null, empty, not JSON)
                parse_json(raw)
            except SchemaError as e:
                bad[i] = e
    return objs, bad


def _fast(kind: str, vals: list) -> tuple[list[bool], Any]:
    """Per value: does the fast check accept it; and the column built from the accepted ones
    (garbage where not accepted)."""
    if kind == "string":
        return [type(v) is str for v in vals], vals
    if kind == "float":
        ok = [type(v) is float or type(v) is int for v in vals]
        return ok, np.array([v if o else 0.0 for v, o in zip(vals, ok, strict=True)],
                            dtype=np.float64)
    if kind == "int":
        ok = [type(v) is int for v in vals]
        try:
            return ok, np.array([v if o else 0 for v, o in zip(vals, ok, strict=True)],
                                dtype=np.int64)
        except OverflowError:  # beyond 64 bits: let the row-by-row path judge
            return [False] * len(vals), np.zeros(len(vals), dtype=np.int64)
    if kind == "bool":
        ok = [type(v) is bool for v in vals]
        return ok, np.array([v is True for v in vals], dtype=np.bool_)
    # timestamp: the SDK's wire form, YYYY-MM-DDTHH:MM:SS.ffffffZ, parsed by numpy (exact µs)
    ok = [type(v) is str and len(v) == 27 and v[26] == "Z" and v[10] == "T" for v in vals]
    cut = [v[:26] if o else "1970-01-01T00:00:00.000000" for v, o in zip(vals, ok, strict=True)]
    try:
        us = np.array(cut, dtype="datetime64[us]").astype(np.int64)
    except ValueError:  # some string only looked right: let normalize judge every row
        return [False] * len(vals), np.zeros(len(vals), dtype=np.int64)
    return ok, us


def future_error(source: EventSource, ts_us: int, max_ts_us: int) -> SchemaError:
    """The dead-letter reason of an event stamped too far ahead of the clock."""
    return SchemaError(
        f"{source.timestamp_field} is {(ts_us - max_ts_us) / 1e6 + source.max_future_us / 1e6:.3f}"
        f" s ahead of the clock, more than the source's max_future "
        f"({source.max_future_us / 1e6:g} s): fix the producer's clock, or raise max_future",
        source.timestamp_field, reason="future_timestamp")


def decode_columns(
    source: EventSource, raws: list[bytes | None], offsets: Sequence[int],
    max_ts_us: int | None = None,
) -> tuple[EventColumns, list[tuple[int, SchemaError]]]:
    """Decode messages (with their log offsets): the valid ones as columns, and
    ``[(index, error)]`` for the invalid ones, with ``normalize``'s reasons. Events stamped
    after ``max_ts_us`` (the clock plus the source's ``max_future``) are invalid too, with
    reason ``future_timestamp``."""
    n = len(raws)
    objs, bad = _parse(raws) if n else ([], {})
    good = np.ones(n, dtype=bool)
    slow = np.zeros(n, dtype=bool)
    for i in bad:
        good[i] = False
    dicts = [o if type(o) is dict else {} for o in objs]
    for i, o in enumerate(objs):
        if type(o) is not dict and i not in bad:
            slow[i] = True
    cols: dict[str, Any] = {}
    for name, kind in source.schema.items():
        vals = [d.get(name) for d in dicts]
        ok, col = _fast(kind, vals)
        slow |= ~np.array(ok, dtype=bool)
        cols[name] = col
    for k in source.entity.keys:
        if source.schema[k] == "string":
            slow |= np.array([v == "" for v in cols[k]], dtype=bool)
    slow &= good
    errors: list[tuple[int, SchemaError]] = sorted(bad.items())
    if slow.any():
        for i in np.nonzero(slow)[0].tolist():
            try:
                ev = normalize(source, objs[i])
            except SchemaError as e:
                good[i] = False
                errors.append((i, e))
                continue
            try:
                for name in source.schema:  # accepted by the slow path
                    cols[name][i] = ev[name]
            except OverflowError:
                good[i] = False
                errors.append((i, SchemaError(
                    f"a number of this event does not fit in 64 bits: {objs[i]!r:.200}", None)))
    if max_ts_us is not None:
        tsf = source.timestamp_field
        ahead = good & (cols[tsf] > max_ts_us)
        for i in np.nonzero(ahead)[0].tolist():
            good[i] = False
            errors.append((i, future_error(source, int(cols[tsf][i]), max_ts_us)))
    errors.sort(key=lambda x: x[0])
    idx = np.nonzero(good)[0]
    batch = EventColumns(np.asarray(offsets, dtype=np.int64), cols)
    return (batch if len(idx) == n else batch.take(idx)), errors
