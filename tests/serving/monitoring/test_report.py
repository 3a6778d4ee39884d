import numpy as np
import polars as pl
import pytest

from serving.monitoring.errors import MonitorError
from serving.monitoring.reference import build_reference
from serving.monitoring.report import (
    expand_features,
    format_report,
    latest_window,
    monitor_report,
)
from serving.monitoring.simulate import FEATURES, prediction_log, reference_columns
from serving.monitoring.sources import ModelTarget, ReferenceFiles, model_window


@pytest.fixture(scope="module")
def target():
    cols = reference_columns()
    score = cols.pop("score")
    return ModelTarget("3", build_reference(cols, score), FEATURES)


def test_expand_features_names_the_vector_and_marks_unlogged_rows():
    df = pl.DataFrame({"ts": [1, 2], "features": [[1.0, None], None]})
    wide = expand_features(df, ["a", "b"])
    assert wide.columns == ["ts", "a", "b", "_vector_logged"]
    assert wide["a"].to_list() == [1.0, None] and wide["b"].null_count() == 2
    assert wide["_vector_logged"].to_list() == [True, False]
    with pytest.raises(MonitorError, match="lengths"):
        expand_features(df, ["a", "b", "c"])


def test_latest_window_by_rows_and_seconds():
    df = pl.DataFrame({"ts": [5_000_000, 1_000_000, 3_000_000, 4_000_000]})
    assert latest_window(df, rows=2)["ts"].to_list() == [4_000_000, 5_000_000]
    assert latest_window(df, seconds=2.5)["ts"].to_list() == [3_000_000, 4_000_000, 5_000_000]
    assert latest_window(df, rows=1, seconds=10)["ts"].to_list() == [5_000_000]


def test_report_on_a_drifted_log_names_the_drifted_columns(target):
    log = pl.concat(
        [
            prediction_log(1, 3000),
            prediction_log(2, 1000, shift=1.5, t0=10_000_000),
            prediction_log(3, 500, version="2"),  # another version: not this window
        ]
    )
    window = model_window(log, "fraud", target, rows=1000)
    assert window.height == 1000 and set(FEATURES) <= set(window.columns)
    report = monitor_report("fraud", window, target.reference, version="3")
    d = report.to_dict()
    assert d["status"] == "alert"
    assert set(report.drifted) == {"amount", "score"}
    assert d["window_end_us"] == 10_000_000 + 999 * 1000
    text = format_report(d)
    assert "ALERT" in text and "amount" in text

    quiet = monitor_report("fraud", model_window(log.head(3000), "fraud", target), target.reference)
    assert quiet.alerts == [] and quiet.to_dict()["status"] == "ok"


def test_feature_absent_from_the_log_is_reported_missing(target):
    window = expand_features(prediction_log(4, 1000), FEATURES).drop("has_card")
    by = {c.name: c for c in monitor_report("fraud", window, target.reference).columns}
    assert by["has_card"].null_rate == 1.0 and "null_rate" in by["has_card"].alerts


def test_reference_files_round_trip(tmp_path, target):
    store = ReferenceFiles(tmp_path)
    store.save("fraud", "3", target.reference)
    back = store("fraud")
    assert back.version == "3" and back.reference == target.reference
    assert back.feature_names == FEATURES
    with pytest.raises(MonitorError, match="no reference"):
        store("other")


def test_empty_window_reports_no_alerts(target):
    empty = pl.DataFrame({"ts": np.array([], dtype=np.int64)})
    r = monitor_report("fraud", empty, target.reference).to_dict()
    assert r["rows"] == 0 and r["status"] == "ok" and r["window_end_us"] is None


def test_rows_logged_with_a_hash_only_are_left_out_of_feature_checks(target):
    """A hash-only row says nothing about its features: no null-rate alert from it."""
    log = prediction_log(8, 1000)
    hashed = log.with_columns(
        pl.when(pl.int_range(pl.len()) < 600)
        .then(None)
        .otherwise(pl.col("features"))
        .alias("features")
    )
    report = monitor_report("fraud", model_window(hashed, "fraud", target), target.reference)
    by = {c.name: c for c in report.columns}
    assert report.alerts == []
    assert by["amount"].rows == 400 and by["amount"].null_rate == 0.0
    assert by["score"].rows == 1000
