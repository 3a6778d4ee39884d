"""Registry: apply records versions, load_repo rebuilds the same definitions."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.errors import DefinitionError, RegistryError
from features.registry import apply, load_module, load_repo, load_view
from features.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "feature_repo.py"


def test_round_trip_keeps_versions(tmp_path):
    settings = Settings(tmp_path)
    repo = load_module(EXAMPLE)
    report = apply(repo, settings)
    assert {s.name for s in report.sources} == {"transactions"}
    assert all(status == "new" for _, status in report.views.values())
    loaded = load_repo(settings)
    assert set(loaded.views) == set(repo.views)
    for name, view in repo.views.items():
        assert loaded.views[name].version == view.version
        assert loaded.views[name].spec() == view.spec()
    assert loaded.sources["transactions"].partitions == 4
    again = apply(repo, settings)
    assert all(status == "unchanged" for _, status in again.views.values())


def test_changed_definition_is_a_new_version_and_old_stays_readable(tmp_path):
    settings = Settings(tmp_path)
    apply(load_module(EXAMPLE), settings)
    old = load_repo(settings).views["user_spend_max"].version
    changed = EXAMPLE.read_text().replace('Aggregate("max", WINDOWS', 'Aggregate("max", ["2h"]')
    path = tmp_path / "repo2.py"
    path.write_text(changed)
    report = apply(load_module(path), settings)
    new, status = report.views["user_spend_max"]
    assert status == "changed" and new != old
    assert load_repo(settings).views["user_spend_max"].version == new
    assert load_view(settings, "user_spend_max", old).version == old
    pinned = load_repo(settings, versions={"user_spend_max": old})
    assert pinned.views["user_spend_max"].version == old


def test_errors_say_what_to_do(tmp_path):
    with pytest.raises(RegistryError, match="tessera apply"):
        load_repo(Settings(tmp_path))
    with pytest.raises(DefinitionError, match="no feature repo"):
        load_module(tmp_path / "missing.py")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(DefinitionError, match="boom"):
        load_module(broken)
    apply(load_module(EXAMPLE), Settings(tmp_path))
    with pytest.raises(RegistryError, match="no version"):
        load_view(Settings(tmp_path), "user_spend", "0" * 16)
