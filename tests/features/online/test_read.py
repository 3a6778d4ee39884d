"""Online reads against a real Redis: rings written as the worker writes them, folded at read."""

import pytest

from features.definitions import FeatureRepo
from features.errors import UnknownFeatureError
from features.online.layout import entity_key
from features.online.read import OnlineStore
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
        res = store.get_features(refs, [{"user_id": "u1"}, {"user_id": "nobody"}], at=t)
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
        both = store.get_features(refs, rows, at=t)
        for i, row in enumerate(rows):
            one = store.get_features(refs, [row], at=t)  # the one-entity path
            assert one.features == refs
            assert one.values == [both.values[i]] and one.missing == [both.missing[i]]
            assert one.freshness_s == [both.freshness_s[i]]
