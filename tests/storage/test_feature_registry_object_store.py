"""The feature registry on real S3- and GCS-protocol servers (moto's and fake-gcs-server, from
``tests/conftest.py``) and, for comparison, on a local disk: apply and read back; a plan made
against a registry another ``apply`` has since changed is refused (``RegistryConflict``), and
of two applies racing to commit exactly one wins and the other changes nothing; the commands
(``apply``, ``features list``, ``training-set``) read the registry from the bucket with
nothing on the local disk."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from features.definitions import FeatureRepo
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
from tests.tessera.test_cli_features import EXAMPLE, _app

pytestmark = pytest.mark.integration
MAX_LINE = 'Aggregate("max", WINDOWS, field="amount")]'


def _prefix(request, scheme: str) -> str:
    _, bucket = request.getfixturevalue("gcs_bucket" if scheme == "gs" else "s3_bucket")
    return f"{scheme}://{bucket}/{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["disk", "s3", "gs"])
def settings(request, tmp_path) -> Settings:
    if request.param == "disk":
        return Settings(tmp_path / "home")
    return Settings(tmp_path / "home", registry_uri=f"{_prefix(request, request.param)}/registry")


@pytest.fixture(params=["s3", "gs"])
def prefix(request) -> str:
    return _prefix(request, request.param)


def _variant(tmp_path: Path, label: str, old: str, new: str) -> FeatureRepo:
    """The example repo with one edit (another user's working copy)."""
    text = EXAMPLE.read_text()
    assert old in text
    path = tmp_path / f"repo_{label}.py"
    path.write_text(text.replace(old, new))
    return load_module(path)


def _versions(repo: FeatureRepo) -> dict[str, str]:
    return {name: view.version for name, view in repo.views.items()}


def test_apply_and_read_back(settings, tmp_path):
    repo = load_module(EXAMPLE)
    assert not has_registry(settings)
    assert plan(repo, settings).base is None
    report = apply(repo, settings, plan=plan(repo, settings))
    assert {status for _, status in report.views.values()} == {"new"}
    assert has_registry(settings)
    loaded = load_repo(settings)
    assert _versions(loaded) == _versions(repo)
    for name, view in repo.views.items():
        assert loaded.views[name].spec() == view.spec()
    assert plan(repo, settings).empty
    if settings.registry_uri:  # nothing of it on the local disk
        assert not settings.registry_dir.exists()
        assert Store(settings.registry_uri).exists("current.json")
    # description and tags are not part of the version: committed with current.json
    described = _variant(tmp_path, "d", MAX_LINE, MAX_LINE + ', description="peak spend"')
    the_plan = plan(described, settings)
    assert [c.status for c in the_plan.changes if c.name == "user_spend_max"] == ["metadata"]
    apply(described, settings, plan=the_plan)
    again = load_repo(settings).views["user_spend_max"]
    assert again.description == "peak spend"
    assert again.version == repo.views["user_spend_max"].version
    assert plan(described, settings).empty


def test_a_stale_plan_is_refused_and_changes_nothing(settings, tmp_path):
    apply(load_module(EXAMPLE), settings)
    mine = _variant(tmp_path, "mine", MAX_LINE, 'Aggregate("max", ["2h"], field="amount")]')
    theirs = _variant(tmp_path, "theirs", MAX_LINE, 'Aggregate("max", ["3h"], field="amount")]')
    my_plan, their_plan = plan(mine, settings), plan(theirs, settings)
    assert my_plan.base == their_plan.base is not None
    apply(theirs, settings, plan=their_plan)
    with pytest.raises(RegistryConflict, match="changed since the plan was computed"):
        apply(mine, settings, plan=my_plan)
    assert _versions(load_repo(settings)) == _versions(theirs)
    with pytest.raises(RegistryError, match="no version"):  # refused before writing anything
        load_view(settings, "user_spend_max", mine.views["user_spend_max"].version)
    # planned again against the registry as it is now, it applies
    apply(mine, settings, plan=plan(mine, settings))
    assert _versions(load_repo(settings)) == _versions(mine)


def test_a_plan_for_other_definitions_is_refused(settings, tmp_path):
    repo = load_module(EXAMPLE)
    other = _variant(tmp_path, "o", MAX_LINE, 'Aggregate("max", ["2h"], field="amount")]')
    with pytest.raises(RegistryError, match="other definitions"):
        apply(repo, settings, plan=plan(other, settings))
    assert not has_registry(settings)


def _race(fns) -> tuple[list[int], list[BaseException]]:
    """Run each fn in its own thread, all released together; (winners, errors)."""
    won: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(fns))

    def run(i: int) -> None:
        start.wait()
        try:
            fns[i]()
            won.append(i)
        except BaseException as e:  # collected for the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return won, errors


def test_two_applies_of_plans_from_one_registry_one_wins(settings, tmp_path):
    """Two users plan against the same registry and apply at once: one commits, the other is
    refused, and the registry is the winner's, whole."""
    apply(load_module(EXAMPLE), settings)
    repos = [_variant(tmp_path, str(w), MAX_LINE, f'Aggregate("max", ["{w}h"], field="amount")]')
             for w in (2, 3)]
    plans = [plan(r, settings) for r in repos]
    won, errors = _race([lambda i=i: apply(repos[i], settings, plan=plans[i]) for i in (0, 1)])
    assert len(won) == 1 and len(errors) == 1, errors
    assert isinstance(errors[0], RegistryConflict)
    assert _versions(load_repo(settings)) == _versions(repos[won[0]])


def test_two_applies_racing_to_commit_one_wins(settings, tmp_path, monkeypatch):
    """The race inside ``apply`` itself: both read current.json, both write their version
    files, then both try to swap current.json at the same moment (a barrier in front of the
    real conditional put). On a bucket the conditional put (If-Match on S3,
    ``ifGenerationMatch`` on GCS) lets one through; on a disk the flock makes the second wait
    and read the first's commit, so both commit in turn. Never a silent loss: a loser raises
    RegistryConflict and the registry is one apply's views, whole."""
    apply(load_module(EXAMPLE), settings)
    repos = [_variant(tmp_path, str(w), MAX_LINE, f'Aggregate("max", ["{w}h"], field="amount")]')
             for w in (2, 3)]
    remote = settings.registry_uri is not None
    if remote:
        gate = threading.Barrier(2, timeout=30)
        real = Store.put_if

        def put_if_together(self, rel, data, version):
            if rel == "current.json":
                gate.wait()
            return real(self, rel, data, version)

        monkeypatch.setattr(Store, "put_if", put_if_together)
    won, errors = _race([lambda i=i: apply(repos[i], settings) for i in (0, 1)])
    assert all(isinstance(e, RegistryConflict) for e in errors), errors
    if remote:
        assert len(won) == 1 and len(errors) == 1
        assert "nothing of this apply was made current" in str(errors[0])
        assert _versions(load_repo(settings)) == _versions(repos[won[0]])
    else:
        assert sorted(won) == [0, 1]  # serialised: the second applied on top of the first
        assert _versions(load_repo(settings)) in [_versions(r) for r in repos]


def test_old_registry_without_metadata_in_current_reads_as_before(tmp_path):
    """A local registry written before current.json held metadata (views only; description
    in the version files) still reads, plans and applies."""
    import json

    settings = Settings(tmp_path / "home")
    described = _variant(tmp_path, "d", MAX_LINE, MAX_LINE + ', description="peak spend"')
    apply(described, settings)
    current = settings.registry_dir / "current.json"
    current.write_text(json.dumps({"views": json.loads(current.read_text())["views"]}))
    assert load_repo(settings).views["user_spend_max"].description == "peak spend"
    assert plan(described, settings).empty
    apply(described, settings, plan=plan(described, settings))
    assert json.loads(current.read_text())["generation"] == 1


def _run(runner: CliRunner, args: list[str]) -> str:
    r = runner.invoke(_app(), args)
    assert r.exit_code == 0, (r.output, r.exception)
    return r.output


def test_commands_read_the_registry_from_the_bucket(tmp_path, monkeypatch, prefix):
    """`tessera apply` on one machine; on another (an empty home), with the same
    TESSERA_REGISTRY_URI and TESSERA_OFFLINE_URI, `features list` and `training-set` find
    the definitions in the bucket."""
    monkeypatch.setenv("TESSERA_REGISTRY_URI", f"{prefix}/registry")
    monkeypatch.setenv("TESSERA_OFFLINE_URI", f"{prefix}/offline")
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    runner = CliRunner()
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "laptop"))
    out = _run(runner, ["apply", "--repo", str(EXAMPLE)])
    assert f"registry: {prefix}/registry" in out
    events = tmp_path / "events.parquet"
    pl.DataFrame({"user_id": ["u1", "u1", "u2"], "merchant_id": ["m"] * 3,
                  "amount": [10.0, 20.0, 5.0], "country": ["FR"] * 3,
                  "ts": [datetime(2026, 3, 1, 10), datetime(2026, 3, 1, 10, 30),
                         datetime(2026, 3, 1, 11)]}).write_parquet(events)
    assert "imported 3" in _run(runner, ["import-events", "--source", "transactions",
                                         "--file", str(events)])

    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "ci"))
    listed = _run(runner, ["features", "list"])
    for name in load_module(EXAMPLE).views:
        assert name in listed
    spine = tmp_path / "spine.parquet"
    pl.DataFrame({"user_id": ["u1", "u2"], "ts": [datetime(2026, 3, 1, 11),
                                                  datetime(2026, 3, 1, 12)]}
                 ).write_parquet(spine)
    train = tmp_path / "train.parquet"
    _run(runner, ["training-set", "--spine", str(spine), "--out", str(train),
                  "--features", "user_txn_count:txn_count_24h,user_spend:amount_sum_1h"])
    frame = pl.read_parquet(train).sort("user_id")
    assert frame["user_txn_count__txn_count_24h"].to_list() == [2, 1]
    assert frame["user_spend__amount_sum_1h"].to_list() == [30.0, 5.0]
    for home in ("laptop", "ci"):
        assert not (tmp_path / home / "registry").exists()


def test_tessera_apply_refuses_when_another_apply_lands_after_its_plan(
        settings, tmp_path, monkeypatch):
    """`tessera apply` prints its plan and checks served models against it; another user's
    apply committed during that check makes it stop with RegistryConflict, not apply a plan
    nobody saw over theirs."""
    import tessera.cli_features as cli

    monkeypatch.setenv("TESSERA_HOME", str(settings.home))
    if settings.registry_uri:
        monkeypatch.setenv("TESSERA_REGISTRY_URI", settings.registry_uri)
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    runner = CliRunner()
    _run(runner, ["apply", "--repo", str(EXAMPLE)])
    theirs = _variant(tmp_path, "theirs", MAX_LINE, 'Aggregate("max", ["3h"], field="amount")]')
    mine = tmp_path / "repo_mine.py"
    mine.write_text(EXAMPLE.read_text().replace(MAX_LINE,
                                                'Aggregate("max", ["2h"], field="amount")]'))
    users = cli._users

    def theirs_lands_meanwhile(s, models_uri):
        apply(theirs, Settings.from_env())
        return users(s, models_uri)

    monkeypatch.setattr(cli, "_users", theirs_lands_meanwhile)
    r = runner.invoke(_app(), ["apply", "--repo", str(mine)])
    assert isinstance(r.exception, RegistryConflict), (r.output, r.exception)
    assert "~ user_spend_max" in r.output  # the plan it printed, never applied
    assert _versions(load_repo(Settings.from_env())) == _versions(theirs)
