"""Column decoding gives exactly the per-message verdicts and values of ``decode``."""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest

from examples.feature_repo import transactions
from features.errors import SchemaError
from features.event_columns import EventColumns, decode_columns
from features.event_schema import decode, encode, normalize

T0 = 1_795_000_000_000_000


def variants(rng: random.Random, i: int) -> bytes:
    """A message: mostly the SDK's own form, sometimes another accepted or a rejected one."""
    ev = normalize(transactions, {"user_id": f"u{rng.randrange(50)}", "merchant_id": "m",
                                  "amount": round(rng.uniform(0, 99), 2), "country": "FR",
                                  "ts": (T0 + rng.randrange(10**10)) // 1000})
    raw = orjson.loads(encode(transactions, ev))
    k = rng.randrange(16)
    if k == 0:
        raw["amount"] = 5  # int where a float is asked: accepted
    elif k == 1:
        raw["ts"] = raw["ts"][:-1] + "+00:00"  # another ISO form: accepted
    elif k == 2:
        raw["ts"] = (T0 // 1000) + i  # epoch milliseconds: accepted
    elif k == 3:
        raw["ts"] = "2026-02-30T10:00:00.000000Z"  # looks canonical, is no date: rejected
    elif k == 4:
        raw["user_id"] = ""
    elif k == 5:
        del raw["amount"]
    elif k == 6:
        raw["amount"] = "12"
    elif k == 7:
        return b'{"user_id": '
    elif k == 8:
        return b"[1, 2]"
    elif k == 9:
        raw["ts"] = True
    elif k == 10:  # a number far beyond 64 bits, written by another JSON library
        raw["amount"] = 0
        return orjson.dumps(raw).replace(b'"amount":0', b'"amount":1' + b"0" * 30)
    return orjson.dumps(raw)


def expected(raws):
    good, errors = [], []
    for i, r in enumerate(raws):
        try:
            good.append((i, decode(transactions, r)))
        except SchemaError as e:
            errors.append((i, str(e), e.field))
    return good, errors


@pytest.mark.parametrize("seed", range(8))
def test_columns_equal_row_by_row_decoding(seed):
    rng = random.Random(seed)
    raws = [variants(rng, i) for i in range(rng.randrange(1, 600))]
    offsets = [1000 + 3 * i for i in range(len(raws))]
    got, errors = decode_columns(transactions, raws, offsets)
    good, bad = expected(raws)
    assert [(i, str(e), e.field) for i, e in errors] == bad
    want = EventColumns.from_events(transactions, [(offsets[i], ev) for i, ev in good])
    assert got.offsets.tolist() == want.offsets.tolist()
    for name in transactions.schema:
        a, b = got.columns[name], want.columns[name]
        assert (a if isinstance(a, list) else a.tolist()) == (
            b if isinstance(b, list) else b.tolist()), name


def test_all_valid_batch_is_parsed_in_bulk_and_kept_in_order():
    rng = random.Random(3)
    evs = [normalize(transactions, {"user_id": f"u{i}", "merchant_id": "m", "amount": i * 1.5,
                                    "country": "FR", "ts": (T0 + rng.randrange(10**9)) // 1000})
           for i in range(300)]
    got, errors = decode_columns(transactions, [encode(transactions, e) for e in evs],
                                 range(300))
    assert errors == [] and len(got) == 300
    assert got.columns["ts"].dtype == np.int64
    assert got.columns["ts"].tolist() == [e["ts"] for e in evs]
    assert got.columns["user_id"] == [e["user_id"] for e in evs]


def test_a_message_cannot_borrow_its_neighbours_bytes():
    good = encode(transactions, normalize(transactions, {
        "user_id": "u1", "merchant_id": "m", "amount": 1.0, "country": "FR", "ts": T0 // 1000}))
    # joined as one JSON array these two would parse as two objects, the first a valid event
    raws = [good[:-1] + b'},{"x":1', b'"y":2}', good]
    got, errors = decode_columns(transactions, raws, [0, 1, 2])
    assert [i for i, _ in errors] == [0, 1]
    assert all("not valid JSON" in str(e) for _, e in errors)
    assert got.offsets.tolist() == [2]
