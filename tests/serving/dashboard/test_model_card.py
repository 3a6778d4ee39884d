"""The model card page: every section, ROC and calibration drawn from the stored holdout,
registry strings escaped, unknown models a 404 in the one error body."""

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.dashboard.model_card import model_card_router
from serving.http.errors import install
from serving.registry import ModelRegistry
from serving.registry.training import train
from tests.serving.registry.helpers import write_segmented_set


def test_model_card_page(tmp_path):
    write_segmented_set(tmp_path / "t.parquet", n=1500)
    res = train(tmp_path / "t.parquet", "label", params={"num_iterations": 15},
                segments=["country"])
    res.extra.update(label="<script>alert(1)</script>", feature_views={"v": "3"},
                     training_set={"path": "/data/t.parquet", "fingerprint": "fp&<9>"})
    reg = ModelRegistry(tmp_path / "models")
    reg.register("fraud", res.model_text, res.metadata(), holdout=res.holdout)
    reg.register("fraud", res.model_text, {"features": res.features})  # no holdout, no gates
    reg.set_alias("fraud", "champion", "1", why="first")
    app = FastAPI()
    install(app)
    app.include_router(model_card_router(reg))
    http = TestClient(app)
    page = http.get("/ui/models/fraud").text  # the champion
    assert "<h1>fraud v1 (champion)</h1>" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "fp&amp;&lt;9&gt;" in page
    assert "<code>v:x1</code></td><td>3</td>" in page  # feature with its view version
    for text in ("Review gates", "min_auc", "By country", "num_iterations", "ROC (holdout AUC"):
        assert text in page, text
    roc = re.search(r'<polyline class="roc" points="([^"]+)"', page).group(1).split()
    assert len(roc) > 10 and roc[0] == "30.0,270.0" and roc[-1] == "270.0,30.0"
    assert page.count("<circle") == len(reg_bins(reg))
    bare = http.get("/ui/models/fraud/2").text
    assert "no holdout rows stored" in bare and "never evaluated" in bare
    r = http.get("/ui/models/nope")
    assert r.status_code == 404 and r.json()["code"] == "unknown_model"


def reg_bins(reg):
    from serving.registry.model_card import build_card

    return build_card(reg, "fraud", "1")["calibration"]
