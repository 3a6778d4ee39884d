"""/docs works offline: Swagger UI from Tessera's own files, every operation listed, no request
to another origin (a real headless Chromium)."""

import pytest

from features.online.read import OnlineStore
from serving.http.app import create_app, fast_app
from serving.scorer.models import ModelSet
from serving.scorer.scorer import Scorer
from serving.scorer.synthetic import REPO
from tests.serving.dashboard.conftest import block_other_origins
from tests.serving.scorer.world import make_world

pytestmark = pytest.mark.integration


def test_docs_render_every_operation_without_the_network(browser, serve, redis_client, tmp_path):
    client, reg, _ = make_world(redis_client, tmp_path)
    models = ModelSet(reg)
    models.serve("fraud")
    app = create_app(Scorer(OnlineStore(client, REPO), models))
    base = serve(fast_app(app))
    operations = sum(len(ops) for ops in app.openapi()["paths"].values())
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    outside = block_other_origins(page, base)
    page.goto(f"{base}/docs", wait_until="load")
    page.wait_for_selector(".opblock", timeout=15_000)
    shown = page.locator(".opblock").count()
    assert outside == [] and errors == []
    assert shown == operations and operations >= 5
    assert "/v1/predict/{model}" in page.inner_text("body")
    page.close()
