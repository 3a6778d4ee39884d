"""``_applied_ts`` from the online writer: a batch's landing is stamped when its Redis write
returned (after submit, before the caller saw it), late events are stamped never, a batch
refolded after the fence fired keeps its landing and is stamped by the write that carried it,
a lost store stamps what the rebuild takes over, and the offline writer waits for the stamp."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from examples.feature_repo import transactions, user_spend, user_txn_count
from features.event_columns import EventColumns
from features.event_schema import normalize
from features.offline.event_log import EventLog
from features.online.backend import open_backend
from features.online.cluster import primaries
from streams.worker.landing import NEVER_US, Landing, LandingTimeout
from streams.worker.offline_sink import OfflineWriter
from streams.worker.online import OnlineWriter, StoreLost

pytestmark = pytest.mark.integration
MIN_US = 60_000_000
HOUR_US = 60 * MIN_US


def _batch(now: int, offsets: range, late: set[int] = frozenset()) -> dict:
    rows = [(i, normalize(transactions, {
        "user_id": f"u{i % 3}", "merchant_id": "m", "amount": 1.0 + i, "country": "FR",
        "ts": (now - (400 * HOUR_US if i in late else (i % 5) * MIN_US)) // 1000}))
        for i in offsets]
    return {0: (EventColumns.from_events(transactions, rows), rows[-1][0], 0, rows[-1][0])}


def _writer(client) -> OnlineWriter:
    return OnlineWriter(transactions, [user_txn_count, user_spend], open_backend(client), "g",
                        HOUR_US)


def test_landings_are_stamped_by_their_write(redis_client, tmp_path):
    now = time.time_ns() // 1000
    w = _writer(redis_client)
    batch = _batch(now, range(10), late={3, 7})
    landing = w.fold(batch)
    assert landing.at_us is None
    before = time.time_ns() // 1000
    w.commit()
    after = time.time_ns() // 1000
    assert before <= landing.at_us <= after
    applied = landing.applied_us(0, 10)
    assert (applied[[3, 7]] == NEVER_US).all() and (np.delete(applied, [3, 7]) == landing.at_us
                                                    ).all()
    # the offline writer waits for a landing still pending, and writes its stamps
    off = OfflineWriter(EventLog(tmp_path), transactions)
    later = _batch(now, range(10, 16))
    pending = w.fold(later)
    off.add(0, batch[0][0], landing)
    off.add(0, later[0][0], pending)
    done = threading.Timer(0.3, w.commit)
    done.start()
    assert off.write(off.take()) == 16
    done.join()
    log = EventLog(tmp_path).scan(transactions).sort("_offset").collect()
    got = log["_applied_ts"].dt.epoch("us").to_numpy()
    assert list(got) == [*applied, *([pending.at_us] * 6)]
    assert (log["_ingest_ts"].dt.epoch("us").to_numpy() >= pending.at_us).all()


def test_a_refolded_batch_keeps_its_landing(redis_client):
    now = time.time_ns() // 1000
    a, b = _writer(redis_client), _writer(redis_client)
    a.apply(_batch(now, range(5)))
    b.apply(_batch(now, range(8)))  # another writer moved the watermark
    landing = a.fold(_batch(now, range(8, 12)))
    a.commit()
    assert a.stats.fence_retries == 1 and landing.at_us is not None


def test_a_lost_store_stamps_what_the_rebuild_takes_over(redis_client):
    now = time.time_ns() // 1000
    w = _writer(redis_client)
    w.apply(_batch(now, range(4)))
    for node in primaries(redis_client):
        node.flushall()
    landing = w.fold(_batch(now, range(4, 8)))
    with pytest.raises(StoreLost):
        w.commit()
    assert landing.at_us is not None


def test_a_landing_that_never_comes_gives_up_once_stopping():
    stopping = threading.Event()
    stopping.set()
    t0 = time.monotonic()
    with pytest.raises(LandingTimeout):
        Landing().wait(stopping, after_stop_s=0.3)
    assert time.monotonic() - t0 < 5
    failed = Landing()
    failed.fail()
    with pytest.raises(LandingTimeout, match="failed"):
        failed.wait(threading.Event())
