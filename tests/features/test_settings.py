"""One configuration: defaults < tessera.yaml (found upward) < environment < arguments."""

import json

import pytest
from pydantic import ValidationError

from features.settings import Settings, find_project_file

ENV = ("TESSERA_HOME", "KAFKA_BOOTSTRAP", "REDIS_URL", "TESSERA_REPO", "TESSERA_PROJECT",
       "TESSERA_MODELS_URI", "TESSERA_SERVE__MAX_ENTITIES")


@pytest.fixture
def clean(monkeypatch, tmp_path):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_defaults_without_a_project_file(clean, tmp_path):
    s = Settings()
    assert s.home == tmp_path / ".tessera" and s.project_file is None
    assert s.repo is None and s.redis_url is None and s.serve.max_entities == 1000


def test_project_file_is_found_upward_and_its_paths_are_relative_to_it(clean, tmp_path):
    (tmp_path / "tessera.yaml").write_text(
        "home: state\nrepo: defs/repo.py\nredis_url: redis://a:1/0\n"
        "serve:\n  max_entities: 5\n  log_vectors: true\n")
    deep = tmp_path / "x" / "y"
    deep.mkdir(parents=True)
    clean.chdir(deep)
    s = Settings()
    assert find_project_file() == tmp_path / "tessera.yaml" == s.project_file
    assert s.home == tmp_path / "state" and s.repo == tmp_path / "defs" / "repo.py"
    assert s.redis_url == "redis://a:1/0"
    assert s.serve.max_entities == 5 and s.serve.log_vectors is True


def test_environment_overrides_the_file_and_arguments_override_both(clean, tmp_path):
    (tmp_path / "tessera.yaml").write_text("redis_url: redis://file:1/0\nserve:\n"
                                           "  max_entities: 5\n")
    clean.setenv("REDIS_URL", "redis://env:2/0")
    clean.setenv("TESSERA_SERVE__MAX_ENTITIES", "7")
    clean.setenv("TESSERA_HOME", str(tmp_path / "envhome"))
    s = Settings()
    assert s.redis_url == "redis://env:2/0" and s.serve.max_entities == 7
    assert s.home == tmp_path / "envhome"
    assert Settings(tmp_path / "arg", None, "redis://arg:3/0").redis_url == "redis://arg:3/0"
    assert Settings(home=tmp_path / "kw").home == tmp_path / "kw"


def test_services_recorded_by_up_fill_unset_addresses(clean, tmp_path):
    home = tmp_path / ".tessera"
    home.mkdir()
    (home / "services.json").write_text(json.dumps({"bootstrap": "b:9", "redis_url": "r"}))
    s = Settings()
    assert (s.kafka_bootstrap, s.redis_url) == ("b:9", "r")
    clean.setenv("REDIS_URL", "redis://env:2/0")
    assert Settings().redis_url == "redis://env:2/0"


def test_unknown_or_invalid_settings_are_refused(clean, tmp_path):
    (tmp_path / "tessera.yaml").write_text("redis_ulr: redis://typo\n")
    with pytest.raises(ValidationError, match="redis_ulr"):
        Settings()
    (tmp_path / "tessera.yaml").write_text("serve:\n  max_entities: 0\n")
    with pytest.raises(ValidationError, match="max_entities"):
        Settings()


def test_tessera_project_names_the_file(clean, tmp_path):
    other = tmp_path / "elsewhere.yaml"
    other.write_text("repo: r.py\n")
    clean.setenv("TESSERA_PROJECT", str(other))
    assert Settings().repo == tmp_path / "r.py"


def _known_env_names() -> set[str]:
    """Every variable the settings read, plus the envvars of CLI flags."""
    import typer.main

    from features.settings import ServeSettings
    from tessera import cli

    names = {f.validation_alias for f in Settings.model_fields.values()
             if isinstance(f.validation_alias, str)}
    names |= {f"TESSERA_SERVE__{k.upper()}" for k in ServeSettings.model_fields}
    names.add("TESSERA_PROJECT")
    cli._register()

    def walk(cmd):
        if hasattr(cmd, "commands"):
            for sub in cmd.commands.values():
                walk(sub)
        for p in getattr(cmd, "params", []):
            env = getattr(p, "envvar", None)
            names.update([env] if isinstance(env, str) else env or [])

    walk(typer.main.get_command(cli.app))
    return names


def test_deployment_files_only_set_variables_tessera_reads():
    """A renamed setting must not leave compose or Kubernetes setting a dead variable."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    files = [root / "docker-compose.yml", *sorted((root / "deploy").rglob("*.yaml"))]
    pattern = re.compile(r"\b(TESSERA_[A-Z0-9_]+|KAFKA_BOOTSTRAP|REDIS_URL)\b")
    used = {(m, f.name) for f in files for m in pattern.findall(f.read_text())}
    unknown = sorted((name, f) for name, f in used if name not in _known_env_names())
    assert not unknown, f"set in deployment files but read by nothing: {unknown}"
