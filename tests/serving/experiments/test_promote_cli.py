"""Promote and rollback, and the `tessera` commands that drive deployments and reports."""

import json

import pytest
from typer.testing import CliRunner

from features.errors import RegistryError
from serving.experiments.errors import ExperimentError
from serving.experiments.promote import promote, rollback
from serving.experiments.report import dataset_dirs
from serving.experiments.simulate import simulate_log
from serving.experiments.sink import import_frame
from serving.experiments.spec import Arm, DeploymentSpec, DeploymentStore
from tessera.cli import _register, app
from tests.serving.experiments.models import train_boosters


def test_promote_then_rollback_moves_alias_and_audits(tmp_path):
    store = DeploymentStore(tmp_path)
    store.save(DeploymentSpec("fraud", "1", arms=(Arm("challenger", "2", 0.2),), shadows=("3",)))
    aliases = []
    set_alias = lambda *a: aliases.append(a)  # noqa: E731
    p = promote(store, "fraud", "challenger", who="ana", set_alias=set_alias)
    # the replaced champion stays as a shadow, on probation (autostop rolls back if it wins)
    assert (p.champion, p.arms, p.shadows) == ("2", (), ("3", "1"))
    assert aliases == [("fraud", "champion", "2")]
    assert store.audit_log("fraud")[-2]["why"] == "promote challenger (v2) over v1"
    assert all(e["when"] for e in store.audit_log("fraud"))  # alias moves are stamped too
    s = promote(store, "fraud", "3", set_alias=set_alias)
    assert (s.champion, s.shadows) == ("3", ("1", "2"))
    r = rollback(store, "fraud", set_alias=set_alias)
    assert r.champion == "2" and aliases[-1] == ("fraud", "champion", "2")
    assert store.current("fraud").revision == 4
    q = promote(store, "fraud", "1", set_alias=set_alias, keep_previous=False)
    assert (q.champion, q.shadows) == ("1", ())
    with pytest.raises(ExperimentError, match="no arm named 'nope'"):
        promote(store, "fraud", "nope")


def test_rollback_needs_a_previous_champion(tmp_path):
    store = DeploymentStore(tmp_path)
    store.save(DeploymentSpec("m", "1"))
    with pytest.raises(ExperimentError, match="nothing to roll back to"):
        rollback(store, "m")


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    monkeypatch.setenv("LOGNAME", "tester")  # the OS user getpass reports
    _register()
    runner = CliRunner()

    def run(*args):
        res = runner.invoke(app, list(args), catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output

    return run


def register_versions(models_dir, n):
    from serving.registry import ModelRegistry

    boosters, _ = train_boosters(rounds=(5,) * n)
    reg = ModelRegistry(models_dir)
    for b in boosters:
        reg.register("fraud", b.model_to_string(), {"features": [f"f{i}" for i in range(8)]})
    return reg


def test_deploy_report_promote_rollback_commands(cli, tmp_path):
    reg = register_versions(tmp_path / "models", 4)
    with pytest.raises(RegistryError):
        cli("deploy", "fraud", "--champion", "9")
    spec = json.loads(cli("deploy", "fraud", "--champion", "1", "-m", "first"))
    assert reg.aliases("fraud") == {"champion": "1"}
    assert spec["champion"] == "1" and spec["revision"] == 1
    spec = json.loads(
        cli("deploy", "fraud", "--arm", "challenger=2:0.3", "--shadow", "3", "--salt", "exp")
    )
    assert spec["arms"][0] == {"name": "challenger", "version": "2", "weight": 0.3, "stopped": None}
    assert spec["shadows"] == ["3"] and spec["revision"] == 2
    assert "nothing changed" in cli("deploy", "fraud", "--shadow", "3")

    # logged data, as the sink would have written it
    preds, outcomes = simulate_log(
        DeploymentStore(tmp_path / "models").current("fraud"),
        20_000,
        {"1": 1.5, "2": 0.5, "3": 0.5},
        labelled=0.5,
    )
    for frame, folder in zip((preds, outcomes), dataset_dirs(tmp_path / "offline"), strict=True):
        import_frame(folder, frame)
    text = cli("experiment", "report", "fraud", "--reps", "20")
    assert "arm challenger v2 (live): [anytime-valid] the arm is better" in text
    assert "shadow v3: [anytime-valid] the challenger is better" in text
    r = json.loads(cli("experiment", "report", "fraud", "--reps", "0", "--json"))
    assert r["arms"][0]["vs_champion"]["verdict"]["word"] == "better"

    assert json.loads(cli("promote", "fraud", "--from", "challenger"))["champion"] == "2"
    assert reg.aliases("fraud") == {"champion": "2"}
    assert json.loads(cli("rollback", "fraud", "-m", "bad night"))["champion"] == "1"
    assert reg.aliases("fraud") == {"champion": "1"}
    assert reg.audit("fraud")[-1]["why"] == "bad night"
    hist = cli("experiment", "history", "fraud")
    assert hist.count("os:tester") == 6 and "bad night" in hist  # 4 revisions, 2 alias moves
    assert "alias champion -> v2" in hist
    arms = json.loads(cli("deploy", "fraud", "--arm", "challenger=2:0.3", "--arm", "b=4:0.1"))
    assert [a["name"] for a in arms["arms"]] == ["challenger", "b"]
    arms = json.loads(cli("deploy", "fraud", "--arm", "b=4:0"))
    assert [a["name"] for a in arms["arms"]] == ["challenger"]
