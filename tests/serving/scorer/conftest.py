import pytest

from tests.serving.scorer.world import make_world


@pytest.fixture
def world(redis_client, tmp_path):
    return make_world(redis_client, tmp_path)
