"""Training sets "as served" on a real stream: what the scorer read from the online store at a
time, while events (on time, backdated a few minutes, and late) were being produced, equals the
served training set for the same (entity, time); the corrected training set differs exactly by
the events that were not applied yet at that time, and by the late ones."""

from __future__ import annotations

import threading
import time

import numpy as np
import polars as pl
import pytest

from features.event_schema import us_to_iso
from features.offline.event_log import EventLog
from features.offline.served import NEVER_US
from features.offline.timeline_diff import diff_timelines
from features.offline.training_set import build_training_set
from features.online.read import OnlineStore
from features.semantics.windows import parse_duration, window_start
from features.settings import Settings
from serving.scorer.models import LoadedModel
from serving.scorer.scorer import Scorer
from streams.producer import Publisher
from tests.streams.conftest import wait_for
from tests.streams.test_worker import watermarks

pytestmark = pytest.mark.integration

REFS = ["counts:count_10m", "counts:count_2h", "spend:amount_sum_10m", "spend:amount_mean_2h",
        "extremes:amount_min_10m", "extremes:amount_max_10m", "extremes:amount_last_10m"]
EXACT = [0, 1, 4, 5, 6]  # counts, min, max, last: bit for bit (sums fold tiles, to 1e-9)
USERS = [f"u{i}" for i in range(30)]
MIN_US = 60_000_000
DAY_US = 86_400_000_000
# a write's stamp is taken after Redis answered: a read that starts less than this before a
# stamp may or may not have seen it (the slack covers the reply and the callback thread)
SLACK_US = 50_000


def _matrix(df: pl.DataFrame) -> np.ndarray:
    return df.select([pl.col(r.replace(":", "__")).cast(pl.Float64) for r in REFS]).to_numpy()


def _spine(users: list[str], ts: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"user_id": users, "ts": ts},
                        schema={"user_id": pl.String, "ts": pl.Int64}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")))


def test_scorer_reads_equal_the_served_training_set(stream_env, redis_client):
    env = stream_env
    repo = env.repo
    end: dict[int, int] = {}
    sent = [0]
    late_sent: list[tuple[str, int]] = []

    def publish(pub: Publisher, events: list[dict]) -> None:
        report = pub.publish(events)
        assert report.sent == len(events) and not report.rejected and not report.failed
        for p, o in report.last_offsets.items():
            end[p] = max(end.get(p, -1), o)
        sent[0] += len(events)

    env.start_worker(max_records=200)
    with Publisher(env.source, env.bootstrap, linger_ms=1) as pub:
        now = time.time_ns() // 1000
        publish(pub, [{"user_id": u, "merchant_id": "m", "amount": 1.0 + i, "country": "FR",
                       "ts": us_to_iso(now - 30 * MIN_US)} for i, u in enumerate(USERS)])
    wait_for(lambda: all(watermarks(env, redis_client).get(p, -1) >= o for p, o in end.items()),
             60, "the worker to start")

    stop = threading.Event()

    def produce() -> None:
        rng = np.random.default_rng(3)
        with Publisher(env.source, env.bootstrap, linger_ms=1) as pub:
            while not stop.is_set():
                now = time.time_ns() // 1000
                batch = []
                for _ in range(4):
                    u = USERS[int(rng.integers(len(USERS)))]
                    kind = rng.random()
                    if kind < 0.55:
                        ts = now
                    elif kind < 0.92:  # backdated: its event time passes before it is applied
                        ts = now - int(rng.integers(1, 8 * MIN_US))
                    else:  # late: older than the longest window + hop + allowed lateness
                        ts = now - 3 * DAY_US - int(rng.integers(0, DAY_US))
                        late_sent.append((u, ts))
                    batch.append({"user_id": u, "merchant_id": "m", "country": "FR",
                                  "amount": float(np.round(rng.lognormal(3, 1), 2)),
                                  "ts": us_to_iso(ts)})
                publish(pub, batch)
                time.sleep(0.015)

    producer = threading.Thread(target=produce)
    producer.start()
    scorer = Scorer(OnlineStore(redis_client, repo), None)
    plan = scorer.plan(LoadedModel("m", "1", tuple(REFS), None, {}))
    rng = np.random.default_rng(11)
    reads: list[tuple[str, int, int]] = []
    vectors = []
    try:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            users = [USERS[i] for i in rng.choice(len(USERS), 6, replace=False)]
            t0 = time.time_ns() // 1000
            x, _ = scorer.vectors(plan, [{"user_id": u} for u in users], at_us=t0)
            t1 = time.time_ns() // 1000
            reads += [(u, t0, t1) for u in users]
            vectors.append(x)
            time.sleep(0.01)
    finally:
        stop.set()
        producer.join()
    online = np.vstack(vectors)
    wait_for(lambda: all(watermarks(env, redis_client).get(p, -1) >= o for p, o in end.items()),
             60, "the worker to catch up")
    log = EventLog(env.home / "offline")
    wait_for(lambda: log.scan(env.source).select("_offset").collect().height >= sent[0], 30,
             "the event log to catch up", every=0.2)
    events = log.scan(env.source).select(
        "user_id", pl.col("ts").dt.epoch("us"), pl.col("_applied_ts").dt.epoch("us")).collect()
    assert events["_applied_ts"].null_count() == 0
    late_ts = {ts for _, ts in late_sent}
    is_late = events["ts"].is_in(list(late_ts)).to_numpy()
    assert is_late.sum() == len(late_sent) > 5
    assert (events["_applied_ts"].to_numpy()[is_late] == NEVER_US).all()
    assert (events["_applied_ts"].to_numpy()[~is_late] < NEVER_US).all()

    settings = Settings(env.home)
    spine = _spine([u for u, _, _ in reads], [t0 for _, t0, _ in reads])
    served = _matrix(build_training_set(spine, REFS, repo=repo, settings=settings,
                                        timeline="served").frame)
    corrected = _matrix(build_training_set(spine, REFS, repo=repo, settings=settings).frame)

    # rows a write may have landed during (whose stamp is within the read's span + slack)
    by_user = {u: (g["ts"].to_numpy(), g["_applied_ts"].to_numpy())
               for (u,), g in events.group_by("user_id")}
    clear = np.array([not ((by_user[u][1] > t0) & (by_user[u][1] <= t1 + SLACK_US)).any()
                      for u, t0, t1 in reads])
    assert clear.sum() >= max(300, 0.6 * len(reads)), (clear.sum(), len(reads))
    on, off = online[clear], served[clear]
    assert np.array_equal(np.isnan(on), np.isnan(off))
    assert np.array_equal(on[:, EXACT], off[:, EXACT], equal_nan=True)
    assert np.allclose(on, off, rtol=1e-9, atol=0, equal_nan=True)

    # corrected: every event in the 10m window at t counts; served lacks those applied after t
    ten = parse_duration("10m")
    hop = repo.views["counts"].feature("count_10m").hop
    missing = np.array([int(((ts >= window_start(t0, ten, hop)) & (ts < t0)
                             & (applied > t0)).sum())
                        for (u, t0, _) in reads for ts, applied in [by_user[u]]])
    assert (missing > 0).sum() > 20  # backdated events were read before they were applied
    assert ((missing > 0) & clear).sum() > 10  # ... and served matched those reads
    assert np.array_equal(corrected[:, 0] - served[:, 0], missing)

    # late events: counted by the corrected set right after their event time, never served
    late_spine = _spine([u for u, _ in late_sent], [ts + 1 for _, ts in late_sent])
    late_c = _matrix(build_training_set(late_spine, REFS, repo=repo, settings=settings).frame)
    late_s = _matrix(build_training_set(late_spine, REFS, repo=repo, settings=settings,
                                        timeline="served").frame)
    assert (late_c[:, 0] >= 1).all() and (late_s[:, 0] == 0).all()
    assert np.isnan(late_s[:, 4]).all()

    report = diff_timelines(pl.concat([spine, late_spine]), REFS, repo=repo, settings=settings)
    assert report.rows == len(reads) + len(late_sent)
    assert report.rows_late >= len(late_sent)
    assert report.rows_not_yet_applied >= (missing > 0).sum()
    assert report.rows_differing >= int((missing > 0).sum()) + len(late_sent)
    assert report.by_feature["counts__count_10m"] == int((missing > 0).sum()) + len(late_sent)
