"""The scorer against a real Redis: vectors in the model's order, missing counted, request-time
features, and hot reload of the champion under concurrent load."""

import threading
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from features.online.read import OnlineStore
from serving.scorer.models import ModelSet
from serving.scorer.scorer import BadRequest, Scorer
from serving.scorer.synthetic import REPO

pytestmark = pytest.mark.integration


def _missing(feature):
    v = REGISTRY.get_sample_value(
        "tessera_feature_missing_total", {"model": "fraud", "feature": feature}
    )
    return v or 0.0


def test_scores_equal_booster_on_the_vector_in_model_order(world):
    client, reg, now = world
    models = ModelSet(reg)
    m = models.serve("fraud")
    scorer = Scorer(OnlineStore(client, REPO), models)
    feats = list(m.features)
    ents = [{"user_id": f"u{i}"} for i in range(40)] + [{"user_id": "stranger"}]
    res = OnlineStore(client, REPO).get_features(feats, ents, at_us=now)
    x = np.array([[np.nan if v is None else v for v in row] for row in res.values])
    want = reg.get("fraud", "1").booster().predict(x)
    batch = scorer.predict("fraud", ents, at_us=now)
    assert batch["version"] == "1"
    got = np.array([p["score"] for p in batch["predictions"]])
    assert np.abs(got - want).max() <= 1e-9
    one = scorer.predict("fraud", [ents[5]], at_us=now)["predictions"][0]
    assert abs(one["score"] - want[5]) <= 1e-9
    assert set(one["freshness_s"]) == {"txn_counts", "txn_spend", "txn_spread"}
    assert all(a is not None and a >= 0 for a in one["freshness_s"].values())
    before = _missing(feats[0])
    stranger = scorer.predict("fraud", [ents[-1]], at_us=now)["predictions"][0]
    assert stranger["freshness_s"]["txn_counts"] is None
    assert _missing(feats[0]) == before + 1
    with pytest.raises(BadRequest, match="lacks key 'user_id'"):
        scorer.predict("fraud", [{"uid": "u1"}])


def test_request_time_features_fill_their_columns(world, tmp_path):
    client, reg, now = world
    base = reg.get("fraud", "1")
    # same trees, but the model's last input is declared a request-time feature
    feats = base.features[:-1] + ["amount_now"]
    reg.register("fraud", base.model_text, {**base.metadata, "features": feats})
    models = ModelSet(reg)
    models.serve("fraud", "3")
    scorer = Scorer(OnlineStore(client, REPO), models)
    booster = base.booster()
    res = OnlineStore(client, REPO).get_features(feats[:-1], [{"user_id": "u7"}], at_us=now)
    row = [np.nan if v is None else v for v in res.values[0]]
    for given, last in ((123.0, 123.0), (None, np.nan)):
        rf = [{"amount_now": given}] if given is not None else None
        got = scorer.predict("fraud", [{"user_id": "u7"}], rf, at_us=now)["predictions"][0]
        assert abs(got["score"] - booster.predict(np.array([row + [last]]))[0]) <= 1e-9


def test_champion_hot_reload_under_concurrent_load(world):
    client, reg, now = world
    models = ModelSet(reg, reload_s=0.2).start()
    models.serve("fraud")
    scorer = Scorer(OnlineStore(client, REPO), models)
    seen: list[tuple[float, str]] = []  # (when the request started, version that served it)
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer(k):
        i = 0
        while not stop.is_set():
            try:
                started = time.monotonic()
                out = scorer.predict("fraud", [{"user_id": f"u{(i * 7 + k) % 600}"}], at_us=now)
                seen.append((started, out["predictions"][0]["version"]))
            except BaseException as e:  # noqa: BLE001 - any failure fails the test
                errors.append(e)
            i += 1

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        reg.set_alias("fraud", "champion", "2", who="test", why="promote")
        t0 = time.monotonic()
        while models.get("fraud").version != "2" and time.monotonic() - t0 < 5:
            time.sleep(0.02)
        switched_at = time.monotonic()
        switched = switched_at - t0
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        models.close()
    assert not errors
    assert switched < 3
    # every request that started once the switch was seen is served by the new champion (a
    # request that started before may finish later: a thread can be descheduled mid-request)
    after = [v for started, v in seen if started > switched_at]
    assert seen[0][1] == "1" and len(after) > 50 and set(after) == {"2"}
    assert len(seen) > 200
