"""tessera init writes a project that the other commands pick up from any folder below it."""

from typer.testing import CliRunner

from features.repos import resolve_repo
from features.settings import Settings
from tessera import cli


def test_init_then_apply_from_a_subfolder_uses_the_project(tmp_path, monkeypatch):
    for name in ("TESSERA_HOME", "TESSERA_REPO", "TESSERA_PROJECT", "KAFKA_BOOTSTRAP"):
        monkeypatch.delenv(name, raising=False)
    cli._register()
    runner = CliRunner()
    out = runner.invoke(cli.app, ["init", str(tmp_path / "proj")])
    assert out.exit_code == 0, out.output
    sub = tmp_path / "proj" / "notebooks"
    sub.mkdir()
    monkeypatch.chdir(sub)
    applied = runner.invoke(cli.app, ["apply"])
    assert applied.exit_code == 0, applied.output
    assert (tmp_path / "proj" / ".tessera" / "registry" / "current.json").exists()
    again = runner.invoke(cli.app, ["init", str(tmp_path / "proj")])
    assert again.exit_code != 0 and "already exist" in str(again.exception)
    # with the repo setting removed, commands fall back to the applied registry
    (tmp_path / "proj" / "tessera.yaml").write_text("home: .tessera\n")
    repo = resolve_repo(None, Settings())
    assert "user_spend" in repo.views and "transactions" in repo.sources
