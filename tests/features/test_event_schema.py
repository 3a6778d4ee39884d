"""Event validation: the same rules for producers and workers, errors that name the field."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from examples.feature_repo import transactions
from features.errors import SchemaError
from features.event_schema import (
    datetime_to_us,
    decode,
    encode,
    key_of,
    normalize,
    us_to_iso,
)

GOOD = {"user_id": "u1", "merchant_id": "m1", "amount": 12.5, "country": "FR",
        "ts": "2026-11-27T03:00:00Z"}
T0 = datetime_to_us(datetime(2026, 11, 27, 3, tzinfo=UTC))


def raw(**changes) -> bytes:
    ev = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in ev.items() if v is not ...})


def test_decode_normalises_types_and_drops_extra_fields():
    ev = decode(transactions, raw(amount=3, extra="x"))
    assert ev == {"user_id": "u1", "merchant_id": "m1", "amount": 3.0, "country": "FR", "ts": T0}
    assert type(ev["amount"]) is float


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2026-11-27T03:00:00Z", T0),
        ("2026-11-27T03:00:00", T0),  # naive = UTC
        ("2026-11-27T04:00:00+01:00", T0),
        ("2026-11-27T03:00:00.000123Z", T0 + 123),
        (T0 // 1000, T0),  # epoch milliseconds
        (T0 / 1000 + 0.5, T0 + 500),
    ],
)
def test_timestamps(value, expected):
    assert decode(transactions, raw(ts=value))["ts"] == expected


@pytest.mark.parametrize(
    "payload, field, words",
    [
        (b"{not json", None, "JSON"),
        (b"[1, 2]", None, "object"),
        (raw(amount="12"), "amount", "number"),
        (raw(amount=True), "amount", "number"),
        (raw(amount=None), "amount", "missing"),
        (raw(user_id=...), "user_id", "missing"),
        (raw(user_id=""), "user_id", "empty"),
        (raw(user_id=7), "user_id", "string"),
        (raw(ts="yesterday"), "ts", "ISO-8601"),
        (raw(ts=[1]), "ts", "ISO-8601"),
    ],
)
def test_rejections_name_the_field_and_reason(payload, field, words):
    with pytest.raises(SchemaError) as e:
        decode(transactions, payload)
    assert e.value.field == field
    assert words in str(e.value)


def test_encode_round_trips_microseconds():
    ev = normalize(transactions, {**GOOD, "ts": "2026-11-27T03:00:00.654321Z"})
    assert decode(transactions, encode(transactions, ev)) == ev
    assert us_to_iso(T0 + 1) == "2026-11-27T03:00:00.000001Z"
    assert key_of(transactions, ev) == "u1"
