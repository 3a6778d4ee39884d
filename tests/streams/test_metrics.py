"""The worker's /metrics endpoint against a real worker process, broker and Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from features.event_schema import decode
from serving.dashboard import sources as dashboard
from streams.generate import transactions
from streams.producer import Publisher
from streams.worker.metrics import consumer_lag
from tessera.local import free_port
from tests.streams.conftest import VIEWS, wait_for


def test_lag_is_watermark_minus_position_and_never_negative():
    a, b, c, d = (TopicPartition("t", p) for p in range(4))
    highs = {a: 100, b: 50, c: None, d: 7}
    positions = {a: 40, b: 60, c: 3}  # b: a wrong (Tansu-style) watermark; d: nothing read
    assert consumer_lag(highs, positions) == {a: 60, b: 0}
    assert consumer_lag({a: 100}, {a: 100}) == {a: 0}
    assert consumer_lag({}, positions) == {}


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    out = {}
    for fam in text_string_to_metric_families(httpx.get(url, timeout=2).text):
        for s in fam.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_metrics_count_what_was_produced_and_report_freshness(stream_env):
    env = stream_env
    port = free_port()
    env.start_worker(metrics_port=port)
    url = f"http://127.0.0.1:{port}/metrics"

    now = time.time_ns() // 1000
    events = list(transactions(400, start_us=now - 3_600_000_000, rate=400 / 3600, users=40,
                               malformed_fraction=0.05, seed=3))
    good = [e for e in events if isinstance(e, dict)]
    malformed = [e for e in events if isinstance(e, bytes)]
    # older than the longest window (1d) + allowed lateness (1h): offline only
    stale = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    late = [{**e, "ts": stale} for e in good[:7]]
    with Publisher(env.source, env.bootstrap) as pub:
        for f in [pub.send_raw(e) for e in malformed]:
            f.get(timeout=10)
        assert pub.publish(good + late).sent == len(good) + len(late)
    produced_at = time.time()
    times = [decode(env.source, orjson.dumps(e))["ts"] for e in good + late]
    horizon = now - 25 * 3_600_000_000  # the generator's late events are days old too
    n_late = sum(t < horizon for t in times)
    newest_s = max(times) / 1e6
    total = len(good) + len(late) + len(malformed)
    assert malformed and total > 300 and n_late >= len(late)

    key = (("source", "txn"),)

    def caught_up():
        try:
            m = scrape(url)
        except httpx.HTTPError:
            return None
        done = (m.get(("tessera_worker_consumed_events_total", key)) == total
                and m.get(("tessera_worker_offline_events_total", key), 0)
                >= len(good) + len(late))
        return m if done else None

    m = wait_for(caught_up, 40, "the worker's counters to reach what was produced", every=0.3)
    scraped_at = time.time()
    assert m["tessera_worker_dead_letter_events_total", key] == len(malformed)
    assert m["tessera_worker_late_events_total", key] == n_late
    assert m["tessera_worker_applied_events_total", key] == len(good) + len(late) - n_late
    assert m["tessera_worker_offline_events_total", key] == len(good) + len(late)
    assert m["tessera_worker_replayed_events_total", key] == 0
    for view in VIEWS:
        age = m["tessera_worker_freshness_seconds", (("view", view),)]
        # set after the newest event was applied (so after producing), before this scrape
        assert produced_at - newest_s - 0.01 <= age <= scraped_at - newest_s + 0.01, (view, age)
    lags = {labels: v for (name, labels), v in m.items()
            if name == "tessera_worker_consumer_lag"}
    assert {dict(labels)["partition"] for labels in lags} == {"0", "1", "2"}
    assert all(v >= 0 for v in lags.values())  # exact only on Kafka: Tansu's watermarks lie
    # the dashboard's own scraper finds every view's freshness and the event counters
    freshness, throughput = dashboard.scrape([url])
    assert {r["view"] for r in freshness()} == set(VIEWS)
    names = {r["name"] for r in throughput()}
    assert "tessera_worker_applied_events{source=txn}" in names
