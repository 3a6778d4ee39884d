"""Model names are folder names: a request's name can never reach the filesystem as a path of
its own, nor as one too long for it (the fuzz test once got a 500: errno 36)."""

import pytest

from features.errors import RegistryError
from serving.experiments.spec import DeploymentStore
from serving.registry import ModelRegistry


@pytest.mark.parametrize("name", ["İ" * 300, "a" * 129, "..", ".", "a/b", "a\\b", "", "ü"])
def test_bad_names_are_refused_before_any_path_is_built(tmp_path, name):
    with pytest.raises(RegistryError, match="must be 1-128 ASCII"):
        ModelRegistry(tmp_path).versions(name)
    with pytest.raises(RegistryError, match="must be 1-128 ASCII"):
        DeploymentStore(tmp_path).revision(name)


def test_good_names_pass(tmp_path):
    assert ModelRegistry(tmp_path).versions("fraud_v2.1-eu") == []
    assert DeploymentStore(tmp_path).revision("a" * 128) == 0
