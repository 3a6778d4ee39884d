"""Synthetic card transactions for demos, tests and benchmarks (deterministic for a seed).

Users are drawn with a skew (a few heavy spenders, many occasional ones), amounts are
log-normal per merchant category, event times advance at ``rate`` per second from ``start``
with a little jitter. A small share of events is late (event time days in the past, beyond
the longest window) and a small share is malformed (bad JSON, wrong types, missing key).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import orjson

from features.event_schema import us_to_iso

COUNTRIES = np.array(["FR", "DE", "GB", "US", "ES", "IT", "NL", "PL", "SE", "BR"])
_COUNTRY_P = np.array([0.3, 0.15, 0.12, 0.12, 0.08, 0.08, 0.05, 0.04, 0.03, 0.03])
_MALFORMED = [
    b'{"user_id": "u1", "amount": ',  # truncated JSON
    b'{"user_id": "", "merchant_id": "m1", "amount": 1.0, "country": "FR", "ts": 0}',
    b'{"user_id": "u2", "merchant_id": "m1", "amount": "lots", "country": "FR", "ts": 0}',
    b'{"user_id": "u3", "merchant_id": "m1", "amount": 3.0, "country": "FR", "ts": "soon"}',
    b'{"merchant_id": "m1", "amount": 3.0, "country": "FR", "ts": 0}',
    b"not json at all",
]
LATE_BY_US = 9 * 24 * 3600 * 1_000_000  # older than a 7d window plus a day of lateness


def transactions(
    count: int,
    *,
    start_us: int,
    rate: float = 1000.0,
    users: int = 10_000,
    merchants: int = 2_000,
    late_fraction: float = 0.002,
    malformed_fraction: float = 0.002,
    seed: int = 7,
) -> Iterator[dict | bytes]:
    """Yield ``count`` events: dicts in wire form (``ts`` an ISO-8601 string with µs) or raw
    bytes for malformed ones."""
    rng = np.random.default_rng(seed)
    chunk = 65_536
    done = 0
    while done < count:
        n = min(chunk, count - done)
        u = (rng.pareto(1.2, n) * users / 20).astype(np.int64) % users
        m = rng.integers(0, merchants, n)
        cat = m % 5
        amount = np.round(rng.lognormal(2.5 + 0.5 * cat, 0.9), 2)
        country = rng.choice(COUNTRIES, n, p=_COUNTRY_P)
        base = start_us + ((done + np.arange(n)) * (1_000_000 / rate)).astype(np.int64)
        ts = base - rng.integers(0, 2_000_000, n)  # up to 2 s out of order
        late = rng.random(n) < late_fraction
        ts = np.where(late, ts - LATE_BY_US, ts)
        bad = rng.random(n) < malformed_fraction
        bad_kind = rng.integers(0, len(_MALFORMED), n)
        for i in range(n):
            if bad[i]:
                yield _MALFORMED[bad_kind[i]]
            else:
                yield {
                    "user_id": f"u{u[i]}",
                    "merchant_id": f"m{m[i]}",
                    "amount": float(amount[i]),
                    "country": str(country[i]),
                    "ts": us_to_iso(int(ts[i])),
                }
        done += n


def to_json_line(event: dict | bytes) -> bytes:
    """One JSONL line; malformed events as they are."""
    return event if isinstance(event, bytes) else orjson.dumps(event)
