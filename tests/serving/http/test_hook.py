"""TESSERA_SCORER_HOOK: a module:function run with the scorer in every worker."""

import pytest

from features.errors import TesseraError
from serving.http.main import ServeConfig, build_scorer
from serving.scorer.synthetic import write_repo_file

pytestmark = pytest.mark.integration

class _Router:
    def score(self, entity_key, x, request_id=None):
        raise AssertionError("not called here")


def attach(scorer):
    scorer.routers["fraud"] = _Router()


def test_hook_attaches_a_router(tmp_path, redis_client, redis_url):
    from tests.serving.scorer.world import make_world

    _, reg, _ = make_world(redis_client, tmp_path)
    repo = tmp_path / "repo.py"
    write_repo_file(repo)
    cfg = ServeConfig(redis_url, str(reg.storage.root), ["fraud"], str(repo),
                      hook="tests.serving.http.test_hook:attach")
    assert cfg.to_env()["TESSERA_SCORER_HOOK"] == cfg.hook
    scorer = build_scorer(cfg)
    try:
        assert isinstance(scorer.routers["fraud"], _Router)
    finally:
        scorer.models.close()
    with pytest.raises(TesseraError, match="cannot be loaded"):
        build_scorer(ServeConfig(redis_url, str(reg.storage.root), ["fraud"], str(repo),
                                 hook="tests.serving.http.test_hook:nope")).models.close()
