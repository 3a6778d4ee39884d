"""The served timeline against a brute force: an event counts at t only when it is in t's
window and was applied by t; late events never; logs without ``_applied_ts`` fall back to
``_ingest_ts`` with a warning; the CLI's --timeline and --diff-timelines."""

from __future__ import annotations

import random
import warnings
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from features import Aggregate, Entity, EventSource, FeatureRepo, FeatureView
from features.errors import OfflineStoreError
from features.offline.event_log import TS_TYPE, EventLog
from features.offline.served import NEVER_US, ServedTimelineWarning
from features.offline.timeline_diff import diff_timelines
from features.offline.training_set import build_training_set
from features.semantics.windows import window_start
from features.settings import Settings

M = 60_000_000
T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1_000_000)
user = Entity("user", ["user_id"])
SOURCE = EventSource("buys", {"user_id": "string", "amount": "float", "ts": "timestamp"},
                     timestamp_field="ts", entity=user)
VIEW = FeatureView("v", SOURCE, [Aggregate("count", ["10m"]), Aggregate("sum", ["10m"],
                                                                        field="amount"),
                                 Aggregate("last", ["10m"], field="amount")])
REPO = FeatureRepo.of([VIEW])
REFS = ["v:count_10m", "v:amount_sum_10m", "v:amount_last_10m"]


def _log(tmp_path, events: list[dict], applied: bool = True) -> EventLog:
    log = EventLog(tmp_path / "offline")
    cols = {"user_id": [e["user_id"] for e in events],
            "amount": pa.array([e["amount"] for e in events], pa.float64()),
            "ts": pa.array([e["ts"] for e in events], TS_TYPE),
            "_offset": pa.array(range(len(events)), pa.int64()),
            "_ingest_ts": pa.array([e["ingest"] for e in events], TS_TYPE)}
    if applied:
        cols["_applied_ts"] = pa.array([e["applied"] for e in events], TS_TYPE)
    log.append(SOURCE, pa.table(cols), topic="buys", partition=0)
    return log


def _events(rng: random.Random, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        ts = T0 + rng.randrange(0, 60 * M)
        kind = rng.random()
        if kind < 0.1:
            applied = NEVER_US  # late
        else:  # applied a moment to minutes after its event time, backdated ones later
            applied = ts + rng.choice([rng.randrange(1, 2_000_000), rng.randrange(0, 8 * M)])
        out.append({"user_id": rng.choice("abc"), "amount": float(rng.randint(1, 99)),
                    "ts": ts, "applied": applied,
                    "ingest": min(applied, ts + 9 * M) + 1_000_000})
    return out


def _spine(rng: random.Random, n: int) -> pl.DataFrame:
    return pl.DataFrame({"user_id": [rng.choice("abcd") for _ in range(n)],
                         "ts": [T0 + rng.randrange(0, 75 * M) for _ in range(n)]},
                        schema={"user_id": pl.String, "ts": pl.Int64}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")))


def _brute(events, u: str, t: int, served: bool) -> tuple[int, float, float | None]:
    hop = VIEW.feature("count_10m").hop
    sel = [(e["ts"], i, e["amount"]) for i, e in enumerate(events)
           if e["user_id"] == u and window_start(t, 10 * M, hop) <= e["ts"] < t
           and (not served or e["applied"] <= t)]
    sel.sort()
    return len(sel), sum(a for *_, a in sel), sel[-1][2] if sel else None


@pytest.mark.parametrize("seed", [1, 2])
def test_served_equals_brute_force(tmp_path, seed):
    rng = random.Random(seed)
    events = _events(rng, 400)
    _log(tmp_path, events)
    spine = _spine(rng, 300)
    settings = Settings(tmp_path)
    sets = {tl: build_training_set(spine, REFS, repo=REPO, settings=settings, timeline=tl)
            for tl in ("corrected", "served")}
    assert sets["corrected"].fingerprint != sets["served"].fingerprint
    rows_differ = 0
    for tl, built in sets.items():
        for u, t, c, s, last in built.frame.select(
                "user_id", pl.col("ts").dt.epoch("us"), "v__count_10m", "v__amount_sum_10m",
                "v__amount_last_10m").iter_rows():
            want = _brute(events, u, t, tl == "served")
            assert (c, last) == (want[0], want[2]) and np.isclose(s, want[1], rtol=1e-12)
            rows_differ += tl == "served" and want != _brute(events, u, t, False)
    assert rows_differ > 30
    report = diff_timelines(spine, REFS, repo=REPO, settings=settings)
    assert report.rows == 300 and report.rows_differing == rows_differ
    assert report.rows_late > 0 and report.rows_not_yet_applied > 0
    assert report.by_feature["v__count_10m"] == rows_differ


def test_old_logs_fall_back_to_ingest_time_with_a_warning(tmp_path):
    rng = random.Random(3)
    events = _events(rng, 200)
    _log(tmp_path, events, applied=False)
    spine = _spine(rng, 100)
    with pytest.warns(ServedTimelineWarning, match="200 of 200 events"):
        served = build_training_set(spine, ["v:count_10m"], repo=REPO,
                                    settings=Settings(tmp_path), timeline="served").frame
    for e in events:
        e["applied"] = e["ingest"]
    for u, t, c in served.select("user_id", pl.col("ts").dt.epoch("us"),
                                 "v__count_10m").iter_rows():
        assert c == _brute(events, u, t, True)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # corrected does not read _applied_ts: no warning
        build_training_set(spine, ["v:count_10m"], repo=REPO, settings=Settings(tmp_path))


def test_unknown_timeline_is_refused(tmp_path):
    with pytest.raises(OfflineStoreError, match="unknown timeline 'live'"):
        build_training_set(_spine(random.Random(1), 3), ["v:count_10m"], repo=REPO,
                           settings=Settings(tmp_path), timeline="live")


def test_cli_timeline_and_diff(tmp_path, monkeypatch):
    import typer

    from tessera import cli_features

    app = typer.Typer()
    cli_features.register(app)
    rng = random.Random(4)
    _log(tmp_path, _events(rng, 300))
    repo = tmp_path / "repo.py"
    repo.write_text('from features import Aggregate, Entity, EventSource, FeatureView\n'
                    'user = Entity("user", ["user_id"])\n'
                    'SOURCE = EventSource("buys", {"user_id": "string", "amount": "float", '
                    '"ts": "timestamp"}, timestamp_field="ts", entity=user)\n'
                    'v = FeatureView("v", SOURCE, [Aggregate("count", ["10m"])])\n')
    spine = tmp_path / "spine.parquet"
    _spine(rng, 200).write_parquet(spine)
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    runner = CliRunner()
    assert runner.invoke(app, ["apply", "--repo", str(repo), "--no-topics"]).exit_code == 0
    out = tmp_path / "t.parquet"
    r = runner.invoke(app, ["training-set", "--spine", str(spine), "--features", "v:count_10m",
                            "--out", str(out), "--timeline", "served", "--diff-timelines"])
    assert r.exit_code == 0, r.output
    lines = dict(line.strip().split(": ", 1) for line in r.output.splitlines() if ": " in line)
    assert int(lines["rows differing"]) > 0 and int(lines["values differing"]) > 0
    assert int(lines["rows changed by late events (never applied online)"]) > 0
    served = pl.read_parquet(out)
    corrected = build_training_set(spine, ["v:count_10m"], repo=REPO,
                                   settings=Settings(tmp_path)).frame
    assert (served["v__count_10m"] <= corrected["v__count_10m"]).all()
    assert (served["v__count_10m"] != corrected["v__count_10m"]).sum() == int(
        lines["rows differing"])
    r = runner.invoke(app, ["training-set", "--spine", str(spine), "--features", "v:count_10m",
                            "--out", str(out), "--timeline", "as-of"])
    assert r.exit_code != 0 and "as-of" in r.output + str(r.exception)
