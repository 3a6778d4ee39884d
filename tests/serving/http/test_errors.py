"""One error body for every error the scorer answers: ``{"error", "code", "field"}`` (+ extras).

Each case below was a 500, a FastAPI ``{"detail": ...}`` body, a 200 on garbage, or leaked an
absolute path before the schema (issue 16, section 4). Both the served app (``fast_app``, which
answers predict without FastAPI) and the bare FastAPI app are checked."""

import http.client

import httpx
import orjson
import polars as pl
import pytest
from fastapi import APIRouter, HTTPException

from features.online.read import OnlineStore
from serving.client import ScorerClient, ScorerError
from serving.experiments.routes import experiments_router
from serving.http.app import Limits, create_app, fast_app
from serving.monitoring.routes import monitor_router
from serving.monitoring.sources import ReferenceFiles
from serving.scorer.models import ModelSet
from serving.scorer.scorer import Scorer
from serving.scorer.synthetic import FEATURES, REPO
from tests.serving.http.conftest import running
from tests.serving.scorer.world import make_world

pytestmark = pytest.mark.integration

E = [{"user_id": "u1"}]
F = [FEATURES[0]]


def _boom_router(tmp_path) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/boom")
    def boom() -> dict:
        raise RuntimeError(f"secret state at {tmp_path}")

    @router.get("/v1/where")
    def where() -> dict:
        raise HTTPException(404, detail=f"nothing at {tmp_path / 'models' / 'x.json'}; sorry")

    return router


@pytest.fixture(scope="module")
def apps(tmp_path_factory, redis_url):
    """(served url, bare FastAPI url, tmp path): model ``fraud`` serves a version whose last
    input is a request-time feature (``amount_now``), so request_features are really read."""
    import redis

    tmp_path = tmp_path_factory.mktemp("errors")
    rc = redis.Redis.from_url(redis_url)
    rc.flushdb()
    client, reg, now = make_world(rc, tmp_path)
    base = reg.get("fraud", "1")
    reg.register("fraud", base.model_text,
                 {**base.metadata, "features": base.features[:-1] + ["amount_now"]})
    models = ModelSet(reg)
    models.serve("fraud", "3")
    scorer = Scorer(OnlineStore(client, REPO, max_entities=50), models)
    routers = [monitor_router(ReferenceFiles(tmp_path / "models"), lambda: pl.DataFrame()),
               experiments_router(tmp_path / "models", tmp_path / "offline"),
               _boom_router(tmp_path)]
    limits = Limits(max_entities=50, max_features=8, max_body_bytes=20_000)
    with running(fast_app(create_app(scorer, limits=limits, routers=routers))) as fast, \
            running(create_app(scorer, limits=limits, routers=routers)) as bare:
        yield fast, bare, tmp_path, scorer


def _check(r: httpx.Response, status: int, code: str, field: str | None, tmp_path=None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = orjson.loads(r.content)
    assert isinstance(body["error"], str) and body["error"]
    assert body["code"] == code and body["field"] == field, body
    assert "detail" not in body
    if tmp_path is not None:
        assert str(tmp_path) not in r.text and "/tmp" not in r.text
    return body


RF_CASES = [  # (request_features, entities, field): each was a 500 or a silent 200 before
    (5, E, "request_features"),
    ([5], E, "request_features[0]"),
    ([{}, None], E * 2, "request_features[1]"),
    ([{"amount_now": [1]}], E, "request_features[0].amount_now"),
    ([{"amount_now": "12"}], E, "request_features[0].amount_now"),
    ([{"amount_now": True}], E, "request_features[0].amount_now"),
    ([{}], E * 2, "request_features"),
]


@pytest.mark.parametrize("rf,ents,field", RF_CASES)
def test_request_features_of_the_wrong_shape_are_400(apps, rf, ents, field):
    for url in apps[:2]:
        r = httpx.post(f"{url}/v1/predict/fraud", json={"entities": ents, "request_features": rf})
        _check(r, 400, "invalid_field", field)
    ok = httpx.post(f"{apps[0]}/v1/predict/fraud",
                    json={"entities": E * 2, "request_features": [{"amount_now": 1.5}, {}]})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 2


AT_CASES = [([1], "invalid_at"), ({}, "invalid_at"), ("NaN", "invalid_at"), (True, "invalid_at"),
            ("x" * 1000, "invalid_at"), (10**17, "invalid_at")]


@pytest.mark.parametrize("at,code", AT_CASES)
def test_bad_at_is_400_on_both_routes(apps, at, code):
    for url in apps[:2]:
        for path, body in (("/v1/predict/fraud", {"entities": E, "at": at}),
                           ("/v1/features", {"features": F, "entities": E, "at": at})):
            _check(httpx.post(url + path, json=body), 400, code, "at")


def test_non_finite_numbers_are_not_json(apps):
    """``NaN``/``Infinity``/1e400 are not JSON: 400 invalid_json, never a read at NaN."""
    for url in apps[:2]:
        for raw in ('{"entities": [{"user_id": "u1"}], "at": NaN}',
                    '{"entities": [{"user_id": "u1"}], "at": 1e400}'):
            for path in ("/v1/predict/fraud", "/v1/features"):
                r = httpx.post(url + path, content=raw,
                               headers={"content-type": "application/json"})
                _check(r, 400, "invalid_json", "body")


BODY_CASES = [
    ("/v1/features", {"features": "x", "entities": E}, "invalid_field", "features"),
    ("/v1/features", {"features": [], "entities": E}, "invalid_field", "features"),
    ("/v1/features", {"features": [5], "entities": E}, "invalid_field", "features[0]"),
    ("/v1/features", {"features": F * 9, "entities": E}, "too_many_features", "features"),
    ("/v1/features", {"features": ["nope:x"], "entities": E}, "unknown_feature", "features"),
    ("/v1/features", {"features": F, "entities": []}, "invalid_field", "entities"),
    ("/v1/features", {"features": F, "entities": E * 51}, "too_many_entities", "entities"),
    ("/v1/features", {"features": F, "entities": [{"user_id": {"a": 1}}]}, "invalid_field",
     "entities[0].user_id"),
    ("/v1/features", {"features": F, "entities": [{"uid": "u1"}]}, "missing_key", "entities[0]"),
    ("/v1/features", [1, 2], "invalid_json", "body"),
    ("/v1/predict/fraud", {"entities": [{"user_id": None}]}, "invalid_field",
     "entities[0].user_id"),
    ("/v1/predict/fraud", {"entities": [{"user_id": [1]}]}, "invalid_field",
     "entities[0].user_id"),
    ("/v1/predict/fraud", {"entities": [5]}, "invalid_field", "entities[0]"),
    ("/v1/predict/fraud", {"entities": "u1"}, "invalid_field", "entities"),
    ("/v1/predict/fraud", {"entities": E * 51}, "too_many_entities", "entities"),
    ("/v1/predict/fraud", {"entities": [{}, {"uid": 1}]}, "missing_key", "entities[0]"),
    ("/v1/predict/fraud", "null", "invalid_json", "body"),
]


@pytest.mark.parametrize("path,body,code,field", BODY_CASES)
def test_bad_bodies_are_400_with_code_and_field(apps, path, body, code, field):
    for url in apps[:2]:
        content = body.encode() if isinstance(body, str) else orjson.dumps(body)
        r = httpx.post(url + path, content=content, headers={"content-type": "application/json"})
        _check(r, 400, code, field)


def _raw(url: str, method: str, path: str, body: bytes | None = None) -> httpx.Response:
    """A request whose path is sent as is (httpx would resolve ``..`` before sending)."""
    host = url.split("//")[1]
    h = http.client.HTTPConnection(host, timeout=5)
    h.request(method, path, body=body, headers={"content-type": "application/json"})
    r = h.getresponse()
    out = httpx.Response(r.status, headers=dict(r.getheaders()), content=r.read())
    h.close()
    return out


@pytest.mark.parametrize("path", [
    "/v1/monitor/..", "/v1/monitor/%2e%2e", "/v1/experiments/%2E%2E", "/v1/monitor/a%2f..%2f..",
    "/v1/experiments/%00", "/ui/static/..", "/v1/monitor/.",
])
def test_dot_segments_are_400_and_leak_no_path(apps, path):
    for url in apps[:2]:
        _check(_raw(url, "GET", path), 400, "invalid_path", "path", apps[2])
        _check(_raw(url, "POST", "/v1/predict/%2e%2e", b'{"entities": []}'), 400,
               "invalid_path", "path", apps[2])


def test_http_exceptions_and_routing_errors_use_the_schema_without_paths(apps):
    fast, bare, tmp_path, _ = apps
    for url in (fast, bare):
        # the monitor's 404 names the reference file it looked for: no absolute path now
        body = _check(httpx.get(f"{url}/v1/monitor/nope"), 404, "not_found", None, tmp_path)
        assert "no reference for model 'nope'" in body["error"]
        body = _check(httpx.get(f"{url}/v1/where"), 404, "not_found", None, tmp_path)
        assert "<path>" in body["error"] and body["error"].endswith("; sorry")
        _check(httpx.get(f"{url}/v1/nothing-here"), 404, "not_found", None)
        _check(httpx.get(f"{url}/v1/features"), 405, "method_not_allowed", None)
        body = _check(httpx.get(f"{url}/v1/experiments/fraud", params={"reps": "many"}), 400,
                      "invalid_field", "reps")
        assert body["errors"][0]["field"] == "reps"
        _check(httpx.get(f"{url}/v1/experiments/nope"), 404, "not_found", None, tmp_path)
        body = _check(httpx.post(f"{url}/v1/predict/nope", json={"entities": E}), 404,
                      "unknown_model", "model")
        assert "not served here" in body["error"]


def test_a_bug_is_a_500_in_the_schema_without_details(apps, monkeypatch):
    fast, bare, tmp_path, scorer = apps
    for url in (fast, bare):
        _check(httpx.get(f"{url}/v1/boom"), 500, "internal", None, tmp_path)

    def broken(*a, **k):
        raise TypeError(f"bug near {tmp_path}")

    monkeypatch.setattr(scorer, "predict", broken)
    monkeypatch.setattr(scorer.store, "get_features", broken)
    for url in (fast, bare):
        body = _check(httpx.post(f"{url}/v1/predict/fraud", json={"entities": E}), 500,
                      "internal", None, tmp_path)
        assert "TypeError" in body["error"]
        _check(httpx.post(f"{url}/v1/features", json={"features": F, "entities": E}), 500,
               "internal", None, tmp_path)


def test_body_over_the_limit_is_413_with_or_without_a_length(apps):
    big = orjson.dumps({"entities": [{"user_id": "u" * 500}] * 45})  # ~23 kB > 20,000
    assert len(big) > 20_000
    for url in apps[:2]:
        for path in ("/v1/predict/fraud", "/v1/features"):
            _check(httpx.post(url + path, content=big), 413, "body_too_large", "body")

            def chunks():
                for i in range(0, len(big), 4096):
                    yield big[i:i + 4096]

            _check(httpx.post(url + path, content=chunks()), 413, "body_too_large", "body")


def test_the_client_exposes_code_and_field(apps):
    with ScorerClient(apps[0]) as c:
        with pytest.raises(ScorerError, match="lacks key 'user_id'") as e:
            c.features(F, [{"uid": "u1"}])
        assert (e.value.status, e.value.code, e.value.field) == (400, "missing_key",
                                                                  "entities[0]")


def test_openapi_documents_the_error_body(apps):
    spec = httpx.get(f"{apps[0]}/openapi.json").json()
    for path, method in (("/v1/predict/{model}", "post"), ("/v1/features", "post")):
        op = spec["paths"][path][method]
        assert {"400", "404", "413", "422", "503"} <= set(op["responses"])
        assert op["tags"] and op["summary"]
        assert "requestBody" in op
    assert {"error", "code", "field"} <= set(spec["components"]["schemas"]["ErrorBody"][
        "properties"])
