"""Synthetic card transactions for demos, tests and benchmarks (deterministic for a seed).

Users are drawn with a skew (a few heavy spenders, many occasional ones), amounts are
log-normal per merchant category, event times advance at ``rate`` per second from ``start``
with a little jitter. A small share of events is late (event time days in the past, beyond
the longest window) and a small share is malformed (bad JSON, wrong types, missing key).

``run`` publishes them at a steady rate and counts every send the broker did not acknowledge:
a failed send is never silent (``tessera generate`` exits 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import orjson

from features.definitions import EventSource
from features.event_schema import encode, key_of, normalize, us_to_iso
from features.kafka_config import KafkaSecurity

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


@dataclass
class GenerateReport:
    """What ``run`` sent: ``failed`` events were not acknowledged (``first_error`` says why)."""

    sent: int = 0
    malformed: int = 0
    failed: int = 0
    first_error: str | None = None

    def fail(self, n: int, error: object) -> None:
        self.failed += n
        if self.first_error is None:
            self.first_error = str(error)


def run(source: EventSource, bootstrap: str, *, count: int | None = None, rate: float = 1000.0,
        users: int = 10_000, seed: int = 7, timeout_s: float = 30.0,
        stop: Callable[[], bool] | None = None,
        security: KafkaSecurity | None = None) -> GenerateReport:
    """Publish synthetic transactions to ``source``'s topic at ``rate`` per second (0 = flat
    out) until ``count`` (None = until ``stop()`` or Ctrl-C).

    Every send waits for its ack at most ``timeout_s`` (delivery timeout, retries included).
    Publishing stops after the first tick (0.1 s of events) with a failed send: the broker is
    not taking events, and sending more would only pile up failures."""
    from streams.producer import Publisher

    gen = transactions(count if count is not None else 10**12, start_us=time.time_ns() // 1000,
                       rate=rate or 1e6, users=users, seed=seed)
    per_tick = max(1, int(rate * 0.1)) if rate else 10_000
    ms = max(1, int(timeout_s * 1000))
    report = GenerateReport()
    t0 = time.monotonic()
    pub = Publisher(source, bootstrap, security=security, delivery_timeout_ms=ms + 20,
                    request_timeout_ms=min(ms, 30_000), max_block_ms=ms)
    try:
        while (count is None or report.sent + report.malformed + report.failed < count) \
                and not (stop and stop()):
            chunk = [e for _, e in zip(range(per_tick), gen, strict=False)]
            if not chunk:
                break
            _send_chunk(pub, chunk, report, timeout_s)
            if report.failed:
                break
            if rate:
                due = t0 + (report.sent + report.malformed) / rate
                time.sleep(max(0.0, due - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:  # bounded: with the broker gone, an unbounded flush or close never returns
        try:
            pub.producer.flush(timeout=timeout_s)
        except Exception:  # noqa: BLE001, S110 - every send was already counted
            pass
        try:  # with the broker gone, close() itself can time out waiting for its sender
            pub.producer.close(timeout=min(timeout_s, 5.0))
        except Exception:  # noqa: BLE001, S110 - as above: nothing left to count
            pass
    return report


def _send_chunk(pub, chunk: list[dict | bytes], report: GenerateReport, timeout_s: float) -> None:
    """Send one tick's events and wait (bounded) for every ack; count what was not acked."""
    src = pub.source
    futures = []
    for e in chunk:
        try:
            if isinstance(e, bytes):
                futures.append((True, pub.send_raw(e)))
            else:
                ev = normalize(src, e)
                futures.append((False, pub.producer.send(
                    src.topic, value=encode(src, ev), key=key_of(src, ev).encode())))
        except Exception as err:  # noqa: BLE001 - counted, never swallowed
            report.fail(1, err)
    try:
        pub.producer.flush(timeout=timeout_s + 5)
    except Exception:  # noqa: BLE001, S110 - the futures below say which sends failed
        pass
    deadline = time.monotonic() + 1.0
    for malformed, fut in futures:
        try:
            fut.get(timeout=max(0.01, deadline - time.monotonic()))
        except Exception as err:  # noqa: BLE001 - counted, never swallowed
            report.fail(1, f"broker did not ack: {err}")
            continue
        if malformed:
            report.malformed += 1
        else:
            report.sent += 1
