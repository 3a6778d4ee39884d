"""Skew check: silent when Redis and the log agree, names entity and feature when not."""

from __future__ import annotations

import time

import pytest

from examples.feature_repo import transactions, user_spend, user_txn_count
from features.definitions import FeatureRepo
from features.event_columns import EventColumns
from features.event_schema import normalize
from features.offline.event_log import EventLog
from features.online.backend import open_backend
from features.skew import agree, skew_check
from streams.worker.offline_sink import to_table
from streams.worker.online import OnlineWriter

MIN_US = 60_000_000


def test_tolerances():
    assert agree("count", 3, 3) and not agree("count", 3, 4)
    assert agree("sum", 1.0, 1.0 + 1e-12) and not agree("sum", 1.0, 1.0 + 1e-6)
    assert agree("max", None, None) and not agree("mean", None, 0.0)


@pytest.mark.integration
def test_skew_check_finds_only_the_tampered_entity(redis_client, tmp_path):
    repo = FeatureRepo.of([user_txn_count, user_spend])
    now = time.time_ns() // 1000
    events = [normalize(transactions, {"user_id": f"u{i % 5}", "merchant_id": "m",
                                       "amount": 10.0 + i, "country": "FR",
                                       "ts": (now - i * 7 * MIN_US) // 1000})
              for i in range(60)]
    log = EventLog(tmp_path)
    records = EventColumns.from_events(transactions, list(enumerate(events)))
    log.append(transactions, to_table(transactions, records, now), topic="transactions",
               partition=0)
    writer = OnlineWriter(transactions, [user_txn_count, user_spend], open_backend(redis_client),
                          "g", 3_600_000_000)
    writer.apply({0: (records, 59, 0, 59)})
    for view in ("user_txn_count", "user_spend"):
        report = skew_check(repo, view, redis_client, log, at=now + 1, sample=None)
        assert report.entities == 5 and report.mismatches == []
    # an event Redis saw but the log did not: u3's counts and sums must now disagree
    extra = normalize(transactions, {"user_id": "u3", "merchant_id": "m", "amount": 5.0,
                                     "country": "FR", "ts": (now - MIN_US) // 1000})
    writer.apply({0: (EventColumns.from_events(transactions, [(1000, extra)]), 1000, 0, 1000)})
    report = skew_check(repo, "user_txn_count", redis_client, log, at=now + 1, sample=None)
    assert {(m.entity["user_id"], m.feature) for m in report.mismatches} == {
        ("u3", f) for f in ("txn_count_1h", "txn_count_24h", "txn_count_7d")}
    assert all(m.online == m.offline + 1 for m in report.mismatches)
    sampled = skew_check(repo, "user_spend", redis_client, log, at=now + 1, sample=2, seed=1)
    assert sampled.entities == 2
