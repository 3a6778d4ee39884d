"""Every route of the served app x every scope, on a real server and Redis: public routes need
nothing; with a token file, a missing token is 401, a wrong scope 403, the right scope passes."""

import re
import time

import httpx
import pytest
from typer.testing import CliRunner

from serving.auth.policy import required_scope
from serving.auth.tokens import SCOPES, TokenStore
from serving.http.main import ServeConfig, build_app
from serving.scorer.synthetic import write_repo_file
from tessera import cli
from tests.serving.http.conftest import running
from tests.serving.scorer.world import make_world

pytestmark = pytest.mark.integration


def _routes(app) -> list[tuple[str, str]]:
    """Every operation of the served app (its OpenAPI paths), with path parameters filled."""
    out = []
    for path, ops in app.app.openapi()["paths"].items():
        for method in ops:
            out.append((method.upper(), re.sub(r"\{[^}]+\}", "fraud", path)))
    return out + [("GET", "/docs"), ("GET", "/openapi.json")]


def _until_enforced(url: str) -> None:
    """The server re-reads the token file at most once a second."""
    deadline = time.monotonic() + 5
    while httpx.get(f"{url}/ui").status_code != 401:
        assert time.monotonic() < deadline, "the server did not pick up the token file"
        time.sleep(0.1)


@pytest.fixture
def served(tmp_path, monkeypatch, redis_client, redis_url):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    _, reg, _ = make_world(redis_client, tmp_path)
    repo = write_repo_file(tmp_path / "repo.py")
    store = TokenStore.at_home(tmp_path)
    app = build_app(ServeConfig(redis_url, str(reg.storage.root), ["fraud"], str(repo)))
    with running(app) as url:
        yield app, url, store


def test_without_tokens_nothing_is_asked(served):
    _, url, _ = served
    r = httpx.post(f"{url}/v1/predict/fraud", json={"entities": [{"user_id": "u1"}]})
    assert r.status_code == 200


def test_every_route_times_every_scope(served):
    app, url, store = served
    tokens = {s: store.create(f"tok-{s}", [s]) for s in SCOPES}
    _until_enforced(url)
    routes = _routes(app)
    assert ("POST", "/v1/predict/fraud") in routes and ("GET", "/ui") in routes
    checked = 0
    with httpx.Client(base_url=url, timeout=10) as c:
        for method, path in routes:
            needed = required_scope(method, path)
            anonymous = c.request(method, path)
            if not needed:  # the guard lets it through (the login form checks tokens itself)
                assert anonymous.status_code != 403, (method, path)
                assert anonymous.status_code != 401 or anonymous.json()["code"] != "unauthorized"
                continue
            assert anonymous.status_code == 401, (method, path, anonymous.text)
            assert anonymous.json()["code"] == "unauthorized"
            for scope, token in tokens.items():
                r = c.request(method, path, headers={"Authorization": f"Bearer {token}"})
                if scope in (needed, "admin"):
                    assert r.status_code not in (401, 403), (method, path, scope, r.text)
                else:
                    assert r.status_code == 403, (method, path, scope, r.status_code)
                    assert r.json()["code"] == "forbidden"
                checked += 1
        bad = c.post("/v1/predict/fraud", headers={"Authorization": "Bearer tsr_x_y"},
                     json={"entities": [{"user_id": "u1"}]})
        assert bad.status_code == 401 and bad.json()["code"] == "invalid_token"
        ok = c.post("/v1/predict/fraud", headers={"Authorization": f"Bearer {tokens['predict']}"},
                    json={"entities": [{"user_id": "u1"}]})
        assert ok.status_code == 200
        feats = c.post("/v1/features", json={"features": ["txn_counts:txn_count_1h"],
                                              "entities": [{"user_id": "u1"}]},
                       headers={"Authorization": f"Bearer {tokens['features:read']}"})
        assert feats.status_code == 200, feats.text
    assert checked >= 5 * len(SCOPES)


def test_the_dashboard_signs_in_with_a_cookie(served):
    _, url, store = served
    token = store.create("viewer", ["ui"])
    predict_only = store.create("svc", ["predict"])
    _until_enforced(url)
    with httpx.Client(base_url=url, timeout=10) as c:
        assert c.get("/ui").status_code == 401
        assert c.post("/auth/login", data={"token": predict_only}).status_code == 401
        r = c.post("/auth/login", data={"token": token})
        assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/ui").status_code == 200  # the cookie, from now on
        # a cookie never authorises a POST (no cross-site request can use it)
        assert c.post("/v1/predict/fraud", json={"entities": [{"user_id": "u1"}]}
                      ).status_code == 401


def test_serve_refuses_an_open_address_without_auth(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    cli._register()
    out = CliRunner().invoke(cli.app, ["serve", "--host", "0.0.0.0", "--allow-no-model"])
    assert out.exit_code != 0 and "without authentication" in str(out.exception)
