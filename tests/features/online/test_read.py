"""Online reads against a real Redis: rings written as the worker writes them, folded at read."""

import pytest

from features.definitions import FeatureRepo
from features.errors import UnknownFeatureError
from features.online.fold import InexactReadError
from features.online.layout import entity_key
from features.online.read import OnlineStore, parse_at
from features.semantics.windows import MINUTE
from tests.features.online.test_fold import LAYOUT, USER, VIEW, build_blobs
from tests.reference import brute_force, close

pytestmark = pytest.mark.integration


def test_get_features_folds_tiles_and_expires_windows(redis_client):
    events = [(m * MINUTE, m, float(m)) for m in range(0, 50, 7)]
    redis_client.hset(entity_key(USER, ["u1"]), mapping=build_blobs(events))
    store = OnlineStore(redis_client, FeatureRepo.of([VIEW]))
    refs = ["user_txn:count_10m", "user_txn:amount_sum_1h", "user_txn:amount_last_10m"]
    for t in (50 * MINUTE, 75 * MINUTE, 3 * 60 * MINUTE):
        res = store.get_features(refs, [{"user_id": "u1"}, {"user_id": "nobody"}], at_us=t)
        for j, ref in enumerate(refs):
            f = VIEW.feature(ref.split(":")[1])
            assert close(res.values[0][j], brute_force(events, f.fn, t, f.window, f.hop))
        assert res.missing[1] == [True, True, True]
        assert res.values[1][:2] == [0, 0.0]
        assert res.freshness_s[0]["user_txn"] == pytest.approx((t - 49 * MINUTE) / 1e6)
    assert LAYOUT.ttl_seconds > 3600


def test_unknown_feature_is_a_clear_error(redis_client):
    store = OnlineStore(redis_client, FeatureRepo.of([VIEW]))
    with pytest.raises(UnknownFeatureError, match="has no feature 'nope'"):
        store.get_features(["user_txn:nope"], [{"user_id": "u1"}])
    with pytest.raises(ValueError, match="lacks key 'user_id'"):
        store.get_features(["user_txn:count_10m"], [{"uid": "u1"}])


def test_one_entity_reads_equal_the_batch_path(redis_client):
    events = [(m * MINUTE, m, float(m)) for m in range(0, 50, 7)]
    redis_client.hset(entity_key(USER, ["u1"]), mapping=build_blobs(events))
    store = OnlineStore(redis_client, FeatureRepo.of([VIEW]))
    refs = [f"user_txn:{f.name}" for f in VIEW.features]
    rows = [{"user_id": "u1"}, {"user_id": "nobody"}]
    for t in (50 * MINUTE, 75 * MINUTE):
        both = store.get_features(refs, rows, at_us=t)
        for i, row in enumerate(rows):
            one = store.get_features(refs, [row], at_us=t)  # the one-entity path
            assert one.features == refs
            assert one.values == [both.values[i]] and one.missing == [both.missing[i]]
            assert one.freshness_s == [both.freshness_s[i]]


def test_query_time_is_iso_or_epoch_ms_or_datetime(redis_client):
    """One parser: ISO-8601 (naive = UTC), epoch milliseconds (number or digits), datetime."""
    from datetime import UTC, datetime

    events = [(m * MINUTE, m, float(m)) for m in range(0, 50, 7)]
    redis_client.hset(entity_key(USER, ["u1"]), mapping=build_blobs(events))
    store = OnlineStore(redis_client, FeatureRepo.of([VIEW]))
    refs = ["user_txn:count_10m", "user_txn:amount_sum_1h"]
    t = 75 * MINUTE + 123_000  # µs, a whole number of ms
    want = store.get_features(refs, [{"user_id": "u1"}], at_us=t).values
    ms = t // 1000
    iso = "1970-01-01T01:15:00.123"
    for at in (ms, float(ms), str(ms), iso, iso + "Z", iso + "+00:00",
               datetime(1970, 1, 1, 1, 15, 0, 123_000, tzinfo=UTC)):
        assert parse_at(at) == t, at
        assert store.get_features(refs, [{"user_id": "u1"}], at=at).values == want
    assert want[0][0] == brute_force(events, "count", t, 10 * MINUTE, MINUTE)
    with pytest.raises(ValueError, match="at_us"):  # µs passed as ms: refused, not misread
        store.get_features(refs, [{"user_id": "u1"}], at=1_700_000_000_000_000)
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_at("yesterday")


def test_past_reads_are_exact_or_name_entity_feature_and_earliest(redis_client):
    """Many entities (the batch fold) and one (the single-entity path): at a grid time before
    the newest events every value equals the reference; off the grid the read is refused."""
    users = [f"p{i}" for i in range(20)]
    per_user = {}
    pipe = redis_client.pipeline()
    for i, u in enumerate(users):
        events = [(m * MINUTE + 1000 * i, m, float((m * (i + 3)) % 17)) for m in range(0, 90, 2)]
        if i == 13:  # one entity whose events stop early: every read after them is exact
            events = events[:10]
        per_user[u] = events
        pipe.hset(entity_key(USER, [u]), mapping=build_blobs(events))
    pipe.execute()
    store = OnlineStore(redis_client, FeatureRepo.of([VIEW]))
    refs = [f"user_txn:{f.name}" for f in VIEW.features]
    rows = [{"user_id": u} for u in users]
    # before the newest events (88 min), on the grid of each ring and within the tiles it holds
    # (two hops beyond its longest window): 85 min for the 1h windows (5m tiles), 87 min for
    # the 10m windows (1m tiles)
    for window, t in (("1h", 85 * MINUTE), ("10m", 87 * MINUTE)):
        mine = [r for r in refs if r.endswith(window)]
        res = store.get_features(mine, rows, at_us=t)
        for u, vals in zip(users, res.values, strict=True):
            for ref, got in zip(mine, vals, strict=True):
                f = VIEW.feature(ref.split(":")[1])
                assert close(got, brute_force(per_user[u], f.fn, t, f.window, f.hop)), (u, ref)
    t = 85 * MINUTE
    with pytest.raises(InexactReadError, match="no longer stored"):  # the 10m ring at 85 min
        store.get_features(refs[:1], rows, at_us=t)
    for batch in (rows, rows[2:3]):
        with pytest.raises(InexactReadError) as e:
            store.get_features(refs, batch, at_us=t + 30_000_000)
        err = e.value
        assert err.entity == entity_key(USER, [batch[0]["user_id"]])
        assert err.feature.startswith("user_txn:") and err.feature in str(err)
        assert err.earliest_us % err.hop_us == 0 and err.earliest_us <= err.newest_us
        body = err.to_dict()
        assert body["entity"] == err.entity and body["earliest_exact_ms"] * 1000 >= err.earliest_us
    # the entity whose events stopped early reads exactly at the same off-grid time
    one = store.get_features(refs, [{"user_id": "p13"}], at_us=t + 30_000_000)
    for ref, got in zip(refs, one.values[0], strict=True):
        f = VIEW.feature(ref.split(":")[1])
        assert close(got, brute_force(per_user["p13"], f.fn, t + 30_000_000, f.window, f.hop))
    # at "now" nothing is refused: the reads fold what is applied
    assert len(store.get_features(refs, rows).values) == len(rows)


def test_many_entities_in_one_read_on_one_redis_and_a_cluster(any_redis_client):
    """60 entities (over all 3 primaries on a cluster) with different histories in one call:
    each equals the brute force, in request order, with the absent ones missing; and the
    one-entity path agrees."""
    histories = {f"u{i}": [(m * MINUTE, m, float(m * (i + 1))) for m in range(i % 9, 50, 5 + i % 4)]
                 for i in range(60)}
    for u, events in histories.items():
        any_redis_client.hset(entity_key(USER, [u]), mapping=build_blobs(events))
    store = OnlineStore(any_redis_client, FeatureRepo.of([VIEW]))
    refs = [f"user_txn:{f.name}" for f in VIEW.features]
    rows = [{"user_id": u} for u in histories] + [{"user_id": "nobody"}]
    t = 52 * MINUTE
    res = store.get_features(refs, rows, at_us=t)
    for i, u in enumerate(histories):
        for j, f in enumerate(VIEW.features):
            want = brute_force(histories[u], f.fn, t, f.window, f.hop)
            assert close(res.values[i][j], want), (u, f.name, res.values[i][j], want)
        assert not any(res.missing[i])
    assert all(res.missing[-1])
    one = store.get_features(refs, [rows[17]], at_us=t)
    assert one.values == [res.values[17]]
