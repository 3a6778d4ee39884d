"""HTTP metrics per route template and status, on a real server, for the fast predict path and
every FastAPI route; unmatched paths share one series."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from features.online.read import OnlineStore
from serving.http.app import create_app, fast_app
from serving.scorer.models import ModelSet
from serving.scorer.scorer import Scorer
from serving.scorer.synthetic import REPO
from tests.serving.http.conftest import running
from tests.serving.scorer.world import make_world

pytestmark = pytest.mark.integration


def _requests(text: str) -> dict[tuple[str, str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == "tessera_http_requests":
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[s.labels["route"], s.labels["method"], s.labels["status"]] = s.value
    return out


def test_every_route_is_counted_by_template_and_status(redis_client, tmp_path):
    client, reg, _ = make_world(redis_client, tmp_path)
    models = ModelSet(reg)
    models.serve("fraud")
    scorer = Scorer(OnlineStore(client, REPO, max_entities=50), models)
    with running(fast_app(create_app(scorer, max_entities=50))) as url:
        with httpx.Client(base_url=url) as c:
            before = _requests(c.get("/metrics").text)
            for _ in range(3):
                assert c.post("/v1/predict/fraud",
                              json={"entities": [{"user_id": "u1"}]}).status_code == 200
            assert c.post("/v1/predict/nope",
                          json={"entities": [{"user_id": "u1"}]}).status_code == 404
            assert c.post("/v1/predict/fraud", content=b"{not json").status_code == 400
            assert c.get("/healthz").status_code == 200
            for i in range(5):
                assert c.get(f"/no/such/path/{i}").status_code == 404
            after = _requests(c.get("/metrics").text)

    def delta(*key):
        return after.get(key, 0) - before.get(key, 0)

    assert delta("/v1/predict/{model}", "POST", "200") == 3
    assert delta("/v1/predict/{model}", "POST", "404") == 1
    assert delta("/v1/predict/{model}", "POST", "400") == 1
    assert delta("/healthz", "GET", "200") == 1
    assert delta("unmatched", "GET", "404") == 5
    assert not any("/no/such" in route for route, _, _ in after)
