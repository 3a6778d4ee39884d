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
