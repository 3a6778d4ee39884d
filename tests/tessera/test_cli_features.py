"""``tessera apply / import-events / training-set / compact`` end to end on a temp home."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
import typer
from typer.testing import CliRunner

from features.errors import TesseraError
from features.offline.training_set import read_fingerprint
from tessera import cli_features

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "feature_repo.py"


def _app() -> typer.Typer:
    app = typer.Typer()
    cli_features.register(app)
    return app


def test_apply_import_training_set_compact(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    runner = CliRunner()
    r = runner.invoke(_app(), ["apply", "--repo", str(EXAMPLE)])
    assert r.exit_code == 0, r.output
    assert "new" in r.output and "user_spend" in r.output

    events = pl.DataFrame({
        "user_id": ["u1", "u1", "u2", "u1"],
        "merchant_id": ["m", "m", "m", "m"],
        "amount": [10.0, 20.0, 5.0, 40.0],
        "country": ["FR"] * 4,
        "ts": [datetime(2026, 3, 1, 10), datetime(2026, 3, 1, 10, 30),
               datetime(2026, 3, 1, 11), datetime(2026, 3, 2, 9)],
    })
    for i, part in enumerate((events.head(2), events.tail(2))):
        path = tmp_path / f"events{i}.parquet"
        part.write_parquet(path)
        r = runner.invoke(_app(), ["import-events", "--source", "transactions", "--file",
                                   str(path)])
        assert r.exit_code == 0 and "imported 2" in r.output, r.output
    r = runner.invoke(_app(), ["import-events", "--source", "transactions", "--file", str(path)])
    assert "already imported" in r.output

    spine = tmp_path / "spine.parquet"
    pl.DataFrame({"user_id": ["u1", "u2", "u1"],
                  "ts": [datetime(2026, 3, 1, 11), datetime(2026, 3, 1, 12),
                         datetime(2026, 3, 2, 9)],
                  "label": [1, 0, 1]}).write_parquet(spine)
    out = tmp_path / "train.parquet"
    args = ["training-set", "--spine", str(spine), "--features",
            "user_txn_count:txn_count_24h,user_spend:amount_sum_1h", "--out", str(out)]
    r = runner.invoke(_app(), args)
    assert r.exit_code == 0, r.output
    assert "rows: 3" in r.output
    df = pl.read_parquet(out)  # 1h window, 5m hop: at 11:00 the window starts at 10:00
    assert df["user_txn_count__txn_count_24h"].to_list() == [2, 1, 2]
    assert df["user_spend__amount_sum_1h"].to_list() == [30.0, 5.0, 0.0]
    fp = read_fingerprint(out)
    assert fp and f"fingerprint: {fp}" in r.output

    r = runner.invoke(_app(), ["compact", "--source", "transactions"])
    assert r.exit_code == 0 and "files merged" in r.output, r.output
    out2 = tmp_path / "train2.parquet"
    r = runner.invoke(_app(), args[:-1] + [str(out2)])
    assert pl.read_parquet(out2).equals(df)


def test_errors_are_tessera_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    r = CliRunner().invoke(_app(), ["compact", "--source", "nope"])
    assert isinstance(r.exception, TesseraError) and "tessera apply" in str(r.exception)


# -- the catalog and apply's plan ------------------------------------------------------------

def _repo_file(tmp_path: Path, name: str, edit=None) -> Path:
    text = EXAMPLE.read_text()
    if edit:
        text = edit(text)
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return path


def _drop_spend_max(text: str) -> str:
    start = text.index("user_spend_max = FeatureView(")
    end = text.index("user_profile = BatchFeatureView(")
    return text[:start] + text[end:]


def _with_metadata(text: str) -> str:
    return text.replace(
        '"user_spend_max", transactions, [Aggregate("max", WINDOWS, field="amount")]',
        '"user_spend_max", transactions, [Aggregate("max", WINDOWS, field="amount")], '
        'description="Largest authorisation", tags={"team": "risk", "pii": "no"}')


def _champion_reading(models: Path, view: str, version: str | None, alias: str | None):
    from serving.registry import ModelRegistry

    reg = ModelRegistry(models)
    meta = {"features": [f"{view}:amount_max_1h", "user_txn_count:txn_count_1h"]}
    if version:
        meta["feature_views"] = {view: version}
    mv = reg.register("fraud", "tree\n", meta)
    if alias:
        reg.set_alias("fraud", alias, mv.version, who="test", why="test")
    return mv.version


def test_plan_refuses_to_break_an_aliased_model_unless_forced(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("TESSERA_MODELS_URI", raising=False)
    runner = CliRunner()
    app = _app()
    r = runner.invoke(app, ["apply", "--repo", str(EXAMPLE)])
    assert r.exit_code == 0, r.output
    assert "+ user_spend_max @" in r.output and "plan: 4 new, 0 changed, 0 removed" in r.output
    from features.registry import load_repo
    from features.settings import Settings

    settings = Settings.from_env()
    v_max = load_repo(settings).views["user_spend_max"].version
    _champion_reading(settings.models_dir, "user_spend_max", v_max, "champion")

    # removing a view the champion reads: refused, the registry untouched
    dropped = _repo_file(tmp_path, "dropped", _drop_spend_max)
    r = runner.invoke(app, ["apply", "--repo", str(dropped)])
    assert isinstance(r.exception, TesseraError), r.output
    assert "- user_spend_max @" in r.output and "1 removed" in r.output
    msg = str(r.exception)
    assert "remove view 'user_spend_max'" in msg and "fraud v1 (champion)" in msg
    assert "--force" in msg
    assert "user_spend_max" in load_repo(settings).views

    # changing it (another window): refused too, and the plan says what changed
    changed = _repo_file(tmp_path, "changed", lambda t: t.replace(
        'Aggregate("max", WINDOWS, field="amount")', 'Aggregate("max", ["1h", "2h"], '
        'field="amount")'))
    r = runner.invoke(app, ["apply", "--repo", str(changed)])
    assert isinstance(r.exception, TesseraError), r.output
    assert "~ user_spend_max @" in r.output and "(changed)" in r.output
    assert "feature added: amount_max_2h" in r.output
    assert "feature removed: amount_max_24h" in r.output
    assert "change (" in str(r.exception)
    r = runner.invoke(app, ["apply", "--repo", str(changed), "--dry-run", "--force"])
    assert r.exit_code == 0 and "dry run" in r.output, r.output
    assert load_repo(settings).views["user_spend_max"].version == v_max

    # description and tags: not a change of version, not blocked, recorded
    meta = _repo_file(tmp_path, "meta", _with_metadata)
    r = runner.invoke(app, ["apply", "--repo", str(meta)])
    assert r.exit_code == 0, r.output
    assert "description/tags only, same version" in r.output
    view = load_repo(settings).views["user_spend_max"]
    assert view.version == v_max and view.tags == {"team": "risk", "pii": "no"}
    assert view.description == "Largest authorisation"

    # --force removes it, and says so
    r = runner.invoke(app, ["apply", "--repo", str(dropped), "--force"])
    assert r.exit_code == 0, r.output
    assert "warning (--force): remove view 'user_spend_max'" in r.output
    assert "removed: user_spend_max" in r.output
    assert "user_spend_max" not in load_repo(settings).views
    r = runner.invoke(app, ["apply", "--repo", str(dropped)])
    assert r.exit_code == 0 and "plan: 0 new, 0 changed, 0 removed, 3 unchanged" in r.output


def test_a_model_without_an_alias_does_not_block(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("TESSERA_MODELS_URI", raising=False)
    from features.settings import Settings

    runner = CliRunner()
    assert runner.invoke(_app(), ["apply", "--repo", str(EXAMPLE)]).exit_code == 0
    _champion_reading(Settings.from_env().models_dir, "user_spend_max", None, None)
    r = runner.invoke(_app(), ["apply", "--repo", str(_repo_file(tmp_path, "d",
                                                                _drop_spend_max))])
    assert r.exit_code == 0, r.output


def test_features_list_and_describe(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("TESSERA_MODELS_URI", raising=False)
    import json

    from features.settings import Settings

    runner = CliRunner()
    app = _app()
    assert runner.invoke(app, ["apply", "--repo", str(_repo_file(tmp_path, "m",
                                                                _with_metadata))]).exit_code == 0
    from features.registry import load_repo

    v_max = load_repo(Settings.from_env()).views["user_spend_max"].version
    _champion_reading(Settings.from_env().models_dir, "user_spend_max", v_max, "champion")
    r = runner.invoke(app, ["features", "list"])
    assert r.exit_code == 0, r.output
    rows = {line.split()[0]: line.split() for line in r.output.splitlines()[1:]}
    assert sorted(rows) == ["user_profile", "user_spend", "user_spend_max", "user_txn_count"]
    assert rows["user_spend_max"][:5] == ["user_spend_max", "windowed", "user", v_max, "3"]
    assert rows["user_spend_max"][5] == "fraud@1(champion)"
    assert rows["user_txn_count"][5] == "fraud@1(champion)"
    assert rows["user_spend"][5] == "-" and rows["user_profile"][1] == "batch"
    assert "Largest authorisation" in r.output

    r = runner.invoke(app, ["features", "describe", "user_spend_max", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["version"] == v_max and d["tags"] == {"team": "risk", "pii": "no"}
    assert d["entity"] == {"name": "user", "keys": ["user_id"]}
    assert d["source"]["name"] == "transactions" and d["source"]["schema"]["amount"] == "float"
    assert [(f["name"], f["type"], f["window"], f["hop"]) for f in d["features"]] == [
        ("amount_max_1h", "float", "1h", "5m"), ("amount_max_24h", "float", "1d", "2h"),
        ("amount_max_7d", "float", "7d", "12h")]
    assert d["models"] == [{"model": "fraud", "version": "1", "aliases": ["champion"],
                            "view_version": v_max}]
    r = runner.invoke(app, ["features", "describe", "user_txn_count"])
    assert r.exit_code == 0 and "txn_count_1h" in r.output and "int" in r.output
    assert "fraud v1 (champion)" in r.output
    r = runner.invoke(app, ["features", "describe", "user_profile"])
    assert "ttl 90d" in r.output and "credit_limit" in r.output
    r = runner.invoke(app, ["features", "describe", "nope"])
    assert isinstance(r.exception, TesseraError) and "user_spend" in str(r.exception)


def test_old_registry_records_keep_their_versions(tmp_path, monkeypatch):
    """A record written before tags existed (no "tags" key) rebuilds to the same version, and a
    view's version does not move when description or tags are set."""
    import json

    from features.definitions import Aggregate, FeatureView
    from features.registry import load_repo
    from features.settings import Settings

    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    assert CliRunner().invoke(_app(), ["apply", "--repo", str(EXAMPLE)]).exit_code == 0
    settings = Settings.from_env()
    for path in (settings.registry_dir / "views").glob("*/*.json"):
        rec = json.loads(path.read_text())
        rec.pop("tags")
        path.write_text(json.dumps(rec))
    views = load_repo(settings).views  # load_view checks each rebuilds to its version
    plain = views["user_spend_max"]
    tagged = FeatureView("user_spend_max", plain.source, [Aggregate("max", ["1h", "24h", "7d"],
                                                                    field="amount")],
                         description="x", tags={"a": "b"})
    assert tagged.version == plain.version == "3fa99fbb9f561051"
