"""The commands on an event log in S3 (TESSERA_OFFLINE_URI): import-events, training-set and
compact give the same training set as on a local disk, and nothing lands on the disk."""

from __future__ import annotations

import uuid
from datetime import datetime

import polars as pl
import pytest
from typer.testing import CliRunner

from features.offline.event_log import EventLog
from tests.tessera.test_cli_features import EXAMPLE, _app

pytestmark = pytest.mark.integration


def _run(runner: CliRunner, args: list[str]) -> str:
    r = runner.invoke(_app(), args)
    assert r.exit_code == 0, r.output
    return r.output


def test_import_training_set_compact_through_s3(tmp_path, monkeypatch, s3_bucket):
    uri = f"s3://{s3_bucket[1]}/{uuid.uuid4().hex[:8]}/offline"
    spine = tmp_path / "spine.parquet"
    pl.DataFrame({"user_id": ["u1", "u2", "u1"],
                  "ts": [datetime(2026, 3, 1, 11), datetime(2026, 3, 1, 12),
                         datetime(2026, 3, 2, 9)], "label": [1, 0, 1]}).write_parquet(spine)
    events = tmp_path / "events.parquet"
    pl.DataFrame({"user_id": ["u1", "u1", "u2", "u1"], "merchant_id": ["m"] * 4,
                  "amount": [10.0, 20.0, 5.0, 40.0], "country": ["FR"] * 4,
                  "ts": [datetime(2026, 3, 1, 10), datetime(2026, 3, 1, 10, 30),
                         datetime(2026, 3, 1, 11), datetime(2026, 3, 2, 9)]}
                 ).write_parquet(events)
    feats = "user_txn_count:txn_count_24h,user_spend:amount_sum_1h"
    runner = CliRunner()
    frames = {}
    for where, offline in (("local", None), ("s3", uri)):
        monkeypatch.setenv("TESSERA_HOME", str(tmp_path / where))
        if offline:
            monkeypatch.setenv("TESSERA_OFFLINE_URI", offline)
        _run(runner, ["apply", "--repo", str(EXAMPLE)])
        assert "imported 4" in _run(runner, ["import-events", "--source", "transactions",
                                             "--file", str(events)])
        out = tmp_path / f"{where}.parquet"
        _run(runner, ["training-set", "--spine", str(spine), "--features", feats,
                      "--out", str(out)])
        frames[where] = pl.read_parquet(out)
    assert frames["s3"].equals(frames["local"]) and frames["s3"].height == 3
    assert not (tmp_path / "s3" / "offline" / "events").exists()
    assert EventLog(uri).files("transactions")  # the files are in the bucket
    assert "files merged" in _run(runner, ["compact", "--source", "transactions"])
    again = tmp_path / "again.parquet"
    _run(runner, ["training-set", "--spine", str(spine), "--features", feats, "--out",
                  str(again)])
    assert pl.read_parquet(again).equals(frames["local"])
