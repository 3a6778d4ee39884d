"""Event validation and normalisation, shared by producers (before sending) and workers (after
receiving), so both sides reject exactly the same events for exactly the same reasons.

A normalised event is a dict holding every schema field and nothing else: strings, ints,
floats, bools, and the timestamp as int microseconds UTC. On the wire a timestamp is an
ISO-8601 string (naive means UTC) or a number of epoch **milliseconds**; ``encode`` writes ISO
strings with microseconds so nothing is lost in transit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from features.definitions import EventSource
from features.errors import SchemaError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_to_us(dt: datetime) -> int:
    """Exact µs since the epoch; naive datetimes are UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    d = dt - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def us_to_iso(us: int) -> str:
    """ISO-8601 UTC string with microseconds (``...T03:00:00.123456Z``)."""
    s, micro = divmod(us, 1_000_000)
    return datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{micro:06d}Z"


def _string(v: object, name: str) -> str:
    if type(v) is str:
        return v
    raise SchemaError(f"field {name!r} must be a string, got {type(v).__name__}", name)


def _int(v: object, name: str) -> int:
    if type(v) is int:
        return v
    if type(v) is float and v.is_integer():
        return int(v)
    raise SchemaError(f"field {name!r} must be an integer, got {v!r}", name)


def _float(v: object, name: str) -> float:
    t = type(v)
    if t is float or t is int:
        return float(v)
    raise SchemaError(f"field {name!r} must be a number, got {type(v).__name__}", name)


def _bool(v: object, name: str) -> bool:
    if type(v) is bool:
        return v
    raise SchemaError(f"field {name!r} must be true or false, got {v!r}", name)


def parse_timestamp(v: object, name: str) -> int:
    t = type(v)
    if t is str:
        try:
            return datetime_to_us(datetime.fromisoformat(v))
        except ValueError:
            raise SchemaError(
                f"field {name!r}: cannot parse time {v!r}; send ISO-8601 "
                "(e.g. 2026-11-27T03:00:00Z) or epoch milliseconds",
                name,
            ) from None
    if t is int:
        return v * 1000
    if t is float:
        return round(v * 1000)
    if isinstance(v, datetime):
        return datetime_to_us(v)
    raise SchemaError(
        f"field {name!r} must be an ISO-8601 string or epoch milliseconds, got "
        f"{type(v).__name__}",
        name,
    )


_CHECKS: dict[str, Callable[[object, str], object]] = {
    "string": _string, "int": _int, "float": _float, "bool": _bool, "timestamp": parse_timestamp,
}

_PLANS: dict[int, tuple[EventSource, list[tuple[str, Callable]], tuple[str, ...]]] = {}


def _plan(source: EventSource) -> tuple[list[tuple[str, Callable]], tuple[str, ...]]:
    p = _PLANS.get(id(source))
    if p is None or p[0] is not source:
        p = _PLANS[id(source)] = (
            source,
            [(k, _CHECKS[t]) for k, t in source.schema.items()],
            source.entity.keys,
        )
    return p[1], p[2]


def normalize(source: EventSource, obj: object) -> dict:
    """Validate an already-parsed event; return the normalised dict or raise ``SchemaError``."""
    if type(obj) is not dict:
        raise SchemaError(f"event must be a JSON object, got {type(obj).__name__}", None)
    checks, keys = _plan(source)
    out = {}
    for name, check in checks:
        v = obj.get(name)
        if v is None:
            raise SchemaError(
                f"field {name!r} is missing or null; every field of source {source.name!r} "
                "is required",
                name,
            )
        out[name] = check(v, name)
    for k in keys:
        if out[k] == "":
            raise SchemaError(f"entity key {k!r} is empty", k)
    return out


def decode(source: EventSource, raw: bytes) -> dict:
    """Parse and validate one message value; raise ``SchemaError`` naming the field."""
    obj = parse_json(raw)
    return normalize(source, obj)


def parse_json(raw: bytes | None) -> object:
    """The JSON of one record value; a null or empty value (a tombstone) is a ``SchemaError``
    with its own reason, so it is dead-lettered like any other bad record."""
    if raw is None:
        raise SchemaError("the record value is null (a tombstone); events need a JSON object",
                          None, reason="null_value")
    if len(raw) == 0:
        raise SchemaError("the record value is empty; events need a JSON object", None,
                          reason="empty_value")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise SchemaError(f"not valid JSON: {e}", None, reason="invalid_json") from None


def encode(source: EventSource, event: dict) -> bytes:
    """Wire form of a normalised event (timestamps as ISO strings with µs)."""
    ts_fields = [k for k, t in source.schema.items() if t == "timestamp"]
    if ts_fields:
        event = dict(event)
        for k in ts_fields:
            event[k] = us_to_iso(event[k])
    return orjson.dumps(event)


def key_of(source: EventSource, event: dict) -> str:
    """Partitioning key: the entity key value(s), so one entity's events share a partition."""
    keys = source.entity.keys
    if len(keys) == 1:
        return str(event[keys[0]])
    return orjson.dumps([str(event[k]) for k in keys]).decode()

