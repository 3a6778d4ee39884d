"""The exactly-once protocol's fence: what a failed fenced write means, and two writers racing
on one partition in a real Redis."""

from __future__ import annotations

import time

import pytest

from examples.feature_repo import transactions, user_spend, user_txn_count
from features.definitions import FeatureRepo
from features.event_columns import EventColumns
from features.event_schema import normalize
from features.online.backend import open_backend
from features.online.cluster import primaries
from features.online.layout import APPLIED_FIELD, Watermark, entity_key
from features.online.read import OnlineStore
from streams.worker.checkpoint import LOST, MOVED, WRITTEN, judge_fence
from streams.worker.online import OnlineWriter, StoreLost
from tests.reference import brute_force, close

MIN_US = 60_000_000
HOUR_US = 60 * MIN_US
W = Watermark


def test_judge_fence():
    f = {0: (W(9, 0, 1), W(19, 0, 2)), 1: (W(-1), W(4, 0, 3))}
    assert judge_fence(f, None) == (WRITTEN, set())
    assert judge_fence(f, {0: W(14, 0, 5), 1: None}) == (MOVED, {0})  # another writer
    assert judge_fence(f, {0: None, 1: None}) == (LOST, {0})  # flushed
    assert judge_fence(f, {0: W(3, 0, 5), 1: None}) == (LOST, {0})  # an older replica
    assert judge_fence(f, {0: W(2, 1, 5), 1: None}) == (MOVED, {0})  # a new epoch, elsewhere


def _events(now: int, n: int) -> list[tuple[int, dict]]:
    return [(i, normalize(transactions, {
        "user_id": f"u{i % 4}", "merchant_id": "m", "amount": 1.0 + i, "country": "FR",
        "ts": (now - (n - i) * 3 * MIN_US) // 1000})) for i in range(n)]


def _batch(rows: list[tuple[int, dict]]) -> dict:
    return {0: (EventColumns.from_events(transactions, rows), rows[-1][0], 0, rows[-1][0])}


def _writer(client) -> OnlineWriter:
    return OnlineWriter(transactions, [user_txn_count, user_spend], open_backend(client), "g",
                        HOUR_US)


@pytest.mark.integration
def test_two_writers_race_on_one_partition_and_the_fence_fires(any_redis_client):
    """A keeps its cached rings while the partition moves to B and back; A's next write must
    not land on top of B's: the fence fires, A reloads B's rings and refolds its batch. On
    one Redis and on a cluster (the fence is each key's own ~applied)."""
    redis_client = any_redis_client
    now = time.time_ns() // 1000
    events = _events(now, 20)
    a, b = _writer(redis_client), _writer(redis_client)
    a.apply(_batch(events[:10]))                 # A: offsets 0..9 in Redis
    b.apply(_batch(events[:15]))                 # B took over: replays 0..9, applies 10..14
    assert b.stats.skipped_replay == 10 and b.stats.applied == 5
    # the partition comes back to A, which still caches its rings of 0..9: folding 15..19
    # onto them and writing would erase B's 10..14
    a.apply(_batch(events[15:]))
    assert a.stats.fence_retries == 1
    assert a.watermarks[0] == 19 == int(redis_client.get(a.offset_key(0)).split(b":")[0])
    _assert_online_is_the_brute_force(redis_client, events, now)


@pytest.mark.integration
def test_a_flushed_store_is_lost_not_moved(any_redis_client):
    """A watermark that vanished is Redis losing data, not another writer: refolding only
    the pending batch would silently drop everything before it."""
    redis_client = any_redis_client
    now = time.time_ns() // 1000
    events = _events(now, 12)
    a = _writer(redis_client)
    a.apply(_batch(events[:6]))
    for node in primaries(redis_client):
        node.flushall()
    with pytest.raises(StoreLost) as e:
        a.apply(_batch(events[6:]))
    assert e.value.partitions == [0]
    with pytest.raises(StoreLost):
        a.check_store()


@pytest.mark.integration
@pytest.mark.parametrize("replay", ["one batch", "two batches"])
def test_a_crash_between_key_writes_and_watermarks_is_skipped_per_key(any_redis_client, replay):
    """Keys written, watermark not moved (a worker killed between the two round trips): the
    replay from the old watermark skips those keys' events by their own ~applied, and applies
    the events of keys the crash left unwritten -- also when the replay comes in small batches
    and a key loaded (and skipped) in one is met again, from the cache, in the next (the double
    count a kill -9 on a Redis Cluster once showed)."""
    redis_client = any_redis_client
    now = time.time_ns() // 1000
    events = _events(now, 16)
    a = _writer(redis_client)
    a.apply(_batch(events[:8]))
    wm_key = a.offset_key(0)
    before = redis_client.get(wm_key)
    # what the crashed worker left: u0's key holds offsets up to 13, the watermark still 7
    crashed = _writer(redis_client)
    crashed.fold(_batch(events[:14]))
    real_advance = crashed.sink.commit  # the real sink; only its watermark round trip is left out

    def keys_only(keys, fields, rings, present, expire, ttl, fences, expected, applied):
        i = keys.index(entity_key(transactions.entity, ("u0",)))
        one = [i]
        return real_advance([keys[i]], fields, [r[one] for r in rings], present[one],
                            expire[one], ttl, {}, [expected[i]], [applied[i]])

    crashed.sink.commit = keys_only
    crashed.commit()
    assert redis_client.get(wm_key) == before
    u0 = entity_key(transactions.entity, ("u0",))
    assert redis_client.hget(u0, APPLIED_FIELD) == b"0:0:13"
    b = _writer(redis_client)
    if replay == "one batch":
        b.apply(_batch(events))  # the replay: 0..7 by the watermark, 8..13 of u0 by its key
    else:
        b.apply(_batch(events[:10]))  # u0's key loaded here: its 8 skipped, nothing written
        b.apply(_batch(events[10:]))  # u0 from the cache: its 12 is in the key already
    assert b.stats.skipped_replay == 8 + sum(1 for o, e in events[8:14] if e["user_id"] == "u0")
    _assert_online_is_the_brute_force(redis_client, events, now)


@pytest.mark.integration
def test_a_key_ahead_rewritten_by_another_stream_keeps_its_marks(any_redis_client):
    """A key ahead of the watermark on its home stream is rewritten in the replay because an
    event forwarded from another partition reaches it: its new ~applied must keep the home
    stream's mark it held (13), not take the watermark (9), or the next batch applies its
    events 10..13 a second time."""
    redis_client = any_redis_client
    now = time.time_ns() // 1000
    events = _events(now, 16)
    a = _writer(redis_client)
    a.apply(_batch(events[:8]))
    crashed = _writer(redis_client)
    crashed.fold(_batch(events[:14]))
    real = crashed.sink.commit
    u0 = entity_key(transactions.entity, ("u0",))

    def keys_only(keys, fields, rings, present, expire, ttl, fences, expected, applied):
        i = keys.index(u0)
        return real([keys[i]], fields, [r[[i]] for r in rings], present[[i]], expire[[i]],
                    ttl, {}, [expected[i]], [applied[i]])

    crashed.sink.commit = keys_only
    crashed.commit()
    assert redis_client.hget(u0, APPLIED_FIELD) == b"0:0:13"
    b = _writer(redis_client)
    rep = b.rep_sid(0, 1)
    fwd = (0, normalize(transactions, {"user_id": "u0", "merchant_id": "m", "amount": 0.5,
                                       "country": "FR", "ts": (now - 2 * MIN_US) // 1000}))
    b.apply({**_batch(events[:10]),
             rep: (EventColumns.from_events(transactions, [fwd]), 0, 0, 0)})
    held = dict(t.split(b":", 1) for t in redis_client.hget(u0, APPLIED_FIELD).split(b","))
    assert held[b"0"] == b"0:13" and held[str(rep).encode()] == b"0:0"
    b.apply(_batch(events[10:]))
    _assert_online_is_the_brute_force(redis_client, [*events, (16, fwd[1])], now)


def _assert_online_is_the_brute_force(redis_client, events, now: int) -> None:
    """Every feature of users u0..u3 read online equals the brute-force reference."""
    repo = FeatureRepo.of([user_txn_count, user_spend])
    store = OnlineStore(redis_client, repo)
    refs = [f"{v.name}:{f.name}" for v in (user_txn_count, user_spend) for f in v.features]
    users = [f"u{i}" for i in range(4)]
    t = now + 1
    got = store.get_features(refs, [{"user_id": u} for u in users], at_us=t)
    feats = [f for v in (user_txn_count, user_spend) for f in v.features]
    for u, row in zip(users, got.values, strict=True):
        mine = [(e["ts"], o, e["amount"]) for o, e in events if e["user_id"] == u]
        for f, value in zip(feats, row, strict=True):
            want = brute_force([(ts, o, amt if f.field else 1.0) for ts, o, amt in mine],
                               f.fn, t, f.window, f.hop)
            assert close(value, want), (u, f.name, value, want)
