"""The HTTP API over a real uvicorn server and a real Redis, through the Python client."""

import httpx
import pytest

from features.event_schema import us_to_iso
from features.online.read import OnlineStore
from serving.client import ScorerClient, ScorerError
from serving.http.app import create_app, fast_app
from serving.scorer.models import ModelSet
from serving.scorer.scorer import Scorer
from serving.scorer.synthetic import FEATURES, REPO
from tests.serving.http.conftest import running
from tests.serving.scorer.world import make_world

pytestmark = pytest.mark.integration


@pytest.fixture
def served(redis_client, tmp_path):
    client, reg, now = make_world(redis_client, tmp_path)
    models = ModelSet(reg)
    models.serve("fraud")
    scorer = Scorer(OnlineStore(client, REPO, max_entities=50), models)
    with running(fast_app(create_app(scorer, max_entities=50))) as url:
        yield url, scorer, now


def test_bare_fastapi_route_answers_like_the_fast_path(served):
    url, scorer, now = served
    body = {"entities": [{"user_id": "u3"}, {"user_id": "u4"}], "at": us_to_iso(now)}
    with running(create_app(scorer, max_entities=50)) as bare:
        for path, status in (("/v1/predict/fraud", 200), ("/v1/predict/nope", 404)):
            a = httpx.post(f"{url}{path}", json=body)
            b = httpx.post(f"{bare}{path}", json=body)
            assert a.status_code == b.status_code == status
            ja, jb = a.json(), b.json()
            for p in ja.get("predictions", []) + jb.get("predictions", []):
                assert len(p.pop("request_id")) == 32  # fresh per prediction
            assert ja == jb


def test_predict_and_features(served):
    url, scorer, now = served
    with ScorerClient(url) as c:
        one = c.predict("fraud", [{"user_id": "u3"}], at=us_to_iso(now))
        want = scorer.predict("fraud", [{"user_id": "u3"}], at_us=now)
        assert one["version"] == "1"
        assert one["predictions"][0]["score"] == pytest.approx(
            want["predictions"][0]["score"], abs=1e-12
        )
        many = c.predict("fraud", [{"user_id": f"u{i}"} for i in range(30)], at=us_to_iso(now))
        assert len(many["predictions"]) == 30
        assert many["predictions"][3]["score"] == pytest.approx(
            one["predictions"][0]["score"], abs=1e-12
        )
        feats = c.features(FEATURES[:3], [{"user_id": "u3"}, {"user_id": "nobody"}],
                           at=us_to_iso(now))
        direct = OnlineStore(scorer.store.client, REPO).get_features(
            FEATURES[:3], [{"user_id": "u3"}], at_us=now
        )
        assert feats["values"][0] == direct.values[0]
        assert feats["missing"][1] == [True, True, True]
        assert c.healthy() and c.ready()["status"] == 200


@pytest.mark.parametrize(
    "path,body,status,message",
    [
        ("/v1/features", {"features": ["txn_counts:nope"], "entities": [{"user_id": "u1"}]},
         400, "has no feature 'nope'"),
        ("/v1/features", {"features": ["nowhere:x"], "entities": [{"user_id": "u1"}]},
         400, "no feature view 'nowhere'"),
        ("/v1/features", {"features": [FEATURES[0]], "entities": [{"uid": "u1"}]},
         400, "lacks key 'user_id'"),
        ("/v1/features", {"features": [FEATURES[0]], "entities": [{"user_id": "u"}] * 51},
         400, "51 entities in one request; the limit is 50"),
        ("/v1/predict/fraud", {"entities": [{"uid": "u1"}]}, 400, "lacks key 'user_id'"),
        ("/v1/predict/fraud", {"entities": [{"user_id": "u"}] * 51}, 400, "the limit is 50"),
        ("/v1/predict/fraud", {"entities": []}, 400, "is empty"),
        ("/v1/predict/fraud", {"rows": []}, 400, '"entities"'),
        ("/v1/predict/nope", {"entities": [{"user_id": "u1"}]}, 404, "not served here"),
    ],
)
def test_clear_4xx_errors(served, path, body, status, message):
    url, _, _ = served
    with ScorerClient(url) as c:
        with pytest.raises(ScorerError, match=message) as e:
            c._post(path, body)
        assert e.value.status == status


def test_metrics_and_openapi(served):
    url, _, now = served
    with ScorerClient(url) as c:
        c.predict("fraud", [{"user_id": "stranger"}], at=now // 1000)
    text = httpx.get(f"{url}/metrics").text
    assert 'tessera_feature_missing_total{feature="txn_counts:txn_count_10m",model="fraud"}' in text
    assert "tessera_predictions_total" in text
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/v1/predict/{model}", "/v1/features", "/healthz", "/readyz", "/metrics"} <= set(
        spec["paths"]
    )
    body = spec["paths"]["/v1/predict/{model}"]["post"]["requestBody"]
    assert "entities" in body["content"]["application/json"]["schema"]["properties"]


def test_at_is_iso_or_epoch_ms_and_inexact_past_reads_are_422(served):
    """HTTP ``at``: epoch ms and ISO-8601 read the same instant; a time before an entity's
    newest event that its tiles cannot answer is a 422 naming entity, feature and the earliest
    exact time, which then reads exactly (checked against the brute-force reference)."""
    from features.event_schema import us_to_iso
    from features.online.layout import entity_key
    from serving.scorer.synthetic import USER, ring_blobs
    from tests.reference import brute_force

    url, scorer, now = served
    base = now - now % 300_000_000  # on the 5 min grid
    events = [(base - 20 * 60_000_000 + 7, 2.0), (base - 60_000_000, 3.0), (base + 5, 4.0)]
    scorer.store.client.hset(entity_key(USER, ["past"]), mapping=ring_blobs(events))
    ref = "txn_counts:txn_count_1h"  # 5 min tiles
    with ScorerClient(url) as c:
        us = base + 8000  # a whole number of ms, after every event
        by_ms = c.features([ref], [{"user_id": "past"}], at=us // 1000)
        by_iso = c.features([ref], [{"user_id": "past"}], at=us_to_iso(us))
        assert by_ms["values"] == by_iso["values"] == [[3]]
        t = base - 120_000_000 + 1  # before the newest event, off the grid
        with pytest.raises(ScorerError, match="cannot be read exactly") as e:
            c.features([ref], [{"user_id": "past"}], at=us_to_iso(t))
        body = e.value.body
        assert e.value.status == 422 and body["entity"] == "tessera:user:past"
        assert body["feature"] == ref and body["earliest_exact_ms"] * 1000 % 300_000_000 == 0
        got = c.features([ref], [{"user_id": "past"}], at=body["earliest_exact_ms"])
        ev = [(ts, i, v) for i, (ts, v) in enumerate(events)]
        want = brute_force(ev, "count", body["earliest_exact_ms"] * 1000, 3_600_000_000,
                           300_000_000)
        assert got["values"] == [[want]]
        with pytest.raises(ScorerError, match="cannot be read exactly") as e:
            c.predict("fraud", [{"user_id": "past"}], at=us_to_iso(t))
        assert e.value.status == 422
        for bad in ("yesterday", now):  # not a time; µs where ms are expected
            with pytest.raises(ScorerError) as e:
                c.predict("fraud", [{"user_id": "u1"}], at=bad)
            assert e.value.status == 400
