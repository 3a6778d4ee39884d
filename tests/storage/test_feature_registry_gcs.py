"""The feature registry on a real GCS-protocol server (fake-gcs-server, from
``tests/conftest.py::gcs_bucket``), as ``test_feature_registry_s3.py`` on S3: apply and read
back; a plan made against a registry another apply has since changed is refused; of two
applies racing to swap ``current.json`` exactly one wins (``ifGenerationMatch``) and the
other changes nothing; the commands read the registry from the bucket."""

from __future__ import annotations

import threading
import uuid

import pytest
from typer.testing import CliRunner

from features.errors import RegistryError
from features.offline.storage import Store
from features.registry import (
    RegistryConflict,
    apply,
    has_registry,
    load_module,
    load_repo,
    load_view,
    plan,
)
from features.settings import Settings
from tests.storage.test_feature_registry_s3 import MAX_LINE, _race, _run, _variant, _versions
from tests.tessera.test_cli_features import EXAMPLE

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(gcs_bucket, tmp_path) -> Settings:
    _, bucket = gcs_bucket
    return Settings(tmp_path / "home", registry_uri=f"gs://{bucket}/{uuid.uuid4().hex[:8]}/reg")


def test_apply_and_read_back(settings, tmp_path):
    repo = load_module(EXAMPLE)
    assert not has_registry(settings)
    report = apply(repo, settings, plan=plan(repo, settings))
    assert {status for _, status in report.views.values()} == {"new"}
    assert has_registry(settings)
    loaded = load_repo(settings)
    assert _versions(loaded) == _versions(repo)
    for name, view in repo.views.items():
        assert loaded.views[name].spec() == view.spec()
    assert plan(repo, settings).empty
    assert not settings.registry_dir.exists()  # nothing of it on the local disk
    assert Store(settings.registry_uri).exists("current.json")
    described = _variant(tmp_path, "d", MAX_LINE, MAX_LINE + ', description="peak spend"')
    apply(described, settings, plan=plan(described, settings))
    assert load_repo(settings).views["user_spend_max"].description == "peak spend"


def test_a_stale_plan_is_refused_and_changes_nothing(settings, tmp_path):
    apply(load_module(EXAMPLE), settings)
    mine = _variant(tmp_path, "mine", MAX_LINE, 'Aggregate("max", ["2h"], field="amount")]')
    theirs = _variant(tmp_path, "theirs", MAX_LINE, 'Aggregate("max", ["3h"], field="amount")]')
    my_plan, their_plan = plan(mine, settings), plan(theirs, settings)
    apply(theirs, settings, plan=their_plan)
    with pytest.raises(RegistryConflict, match="changed since the plan was computed"):
        apply(mine, settings, plan=my_plan)
    assert _versions(load_repo(settings)) == _versions(theirs)
    with pytest.raises(RegistryError, match="no version"):  # refused before writing anything
        load_view(settings, "user_spend_max", mine.views["user_spend_max"].version)
    apply(mine, settings, plan=plan(mine, settings))  # planned again, it applies
    assert _versions(load_repo(settings)) == _versions(mine)


def test_two_applies_racing_to_commit_one_wins(settings, tmp_path, monkeypatch):
    """Both read current.json and write their version files, then both swap current.json at
    the same moment (a barrier in front of the real conditional put): one gets through, the
    other raises RegistryConflict, and the registry is the winner's views, whole."""
    apply(load_module(EXAMPLE), settings)
    repos = [_variant(tmp_path, str(w), MAX_LINE, f'Aggregate("max", ["{w}h"], field="amount")]')
             for w in (2, 3)]
    gate = threading.Barrier(2, timeout=30)
    real = Store.put_if

    def put_if_together(self, rel, data, version):
        if rel == "current.json":
            gate.wait()
        return real(self, rel, data, version)

    monkeypatch.setattr(Store, "put_if", put_if_together)
    won, errors = _race([lambda i=i: apply(repos[i], settings) for i in (0, 1)])
    assert len(won) == 1 and len(errors) == 1, errors
    assert isinstance(errors[0], RegistryConflict)
    assert "nothing of this apply was made current" in str(errors[0])
    assert _versions(load_repo(settings)) == _versions(repos[won[0]])


def test_commands_read_the_registry_from_gcs(tmp_path, monkeypatch, gcs_bucket):
    """`tessera apply` on one machine; on another (an empty home) with the same
    TESSERA_REGISTRY_URI, `features list` finds the definitions in the bucket."""
    prefix = f"gs://{gcs_bucket[1]}/{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TESSERA_REGISTRY_URI", f"{prefix}/registry")
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    runner = CliRunner()
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "laptop"))
    assert f"registry: {prefix}/registry" in _run(runner, ["apply", "--repo", str(EXAMPLE)])
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "ci"))
    listed = _run(runner, ["features", "list"])
    for name in load_module(EXAMPLE).views:
        assert name in listed
    for home in ("laptop", "ci"):
        assert not (tmp_path / home / "registry").exists()
