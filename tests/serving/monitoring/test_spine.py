"""The outcome spine: labelled predictions over a moving range, keys split back into columns."""

from __future__ import annotations

import polars as pl
import pytest

from features import Aggregate, Entity, EventSource, FeatureRepo, FeatureView
from serving.experiments.records import OUTCOME_SCHEMA, PREDICTION_SCHEMA
from serving.experiments.report import dataset_dirs
from serving.experiments.sink import import_frame
from serving.monitoring.errors import MonitorError
from serving.monitoring.spine import entity_keys_of, outcome_spine

S = 1_000_000
DAY = 86_400 * S
CARD = Entity("card", ["bank", "card_id"])
SRC = EventSource("pay", {"bank": "string", "card_id": "string", "ts": "timestamp"}, "ts", CARD)
REPO = FeatureRepo.of([FeatureView("card_pay", SRC, [Aggregate("count", ["1h"])])])


def _log(offline, preds: list[tuple], outcomes: list[tuple]) -> None:
    """preds: (request_id, ts, entity_key, role); outcomes: (label, ts, request_id, entity)."""
    pred_dir, out_dir = dataset_dirs(offline)
    rows = [{"request_id": r, "ts": t, "entity_key": k, "model": "m", "version": "1",
             "role": role, "arm": role, "score": 0.5, "latency_ms": 1.0, "error": None,
             "features_hash": "", "features": None} for r, t, k, role in preds]
    import_frame(pred_dir, pl.DataFrame(rows, schema=pl.from_arrow(
        PREDICTION_SCHEMA.empty_table()).schema))
    rows = [{"label": y, "ts": t, "request_id": r, "entity_key": k, "model": "m"}
            for y, t, r, k in outcomes]
    import_frame(out_dir, pl.DataFrame(rows, schema=pl.from_arrow(
        OUTCOME_SCHEMA.empty_table()).schema))


def test_spine_keeps_labelled_served_predictions_in_the_moving_range(tmp_path):
    t = 100 * DAY
    _log(
        tmp_path,
        [("old", t - 5 * DAY, "b1|c1", "champion"), ("a", t - DAY, "b1|c2", "champion"),
         ("a", t - DAY, "b1|c2", "shadow"), ("b", t, "b2|c3", "arm"),
         ("nolabel", t, "b2|c4", "champion")],
        [(1.0, t - 5 * DAY + S, "old", None), (0.0, t - DAY + S, "a", None),
         (1.0, t + S, None, "b2|c3")],  # the last one by entity and time
    )
    keys = entity_keys_of(["card_pay:count_1h"], REPO)
    assert keys == ("bank", "card_id")
    spine = outcome_spine(tmp_path, "m", keys, days=2, now_us=t + 10 * S)
    assert spine.columns == ["bank", "card_id", "ts", "label"]
    assert spine.rows() == [("b1", "c2", spine["ts"][0], 0.0), ("b2", "c3", spine["ts"][1], 1.0)]
    assert spine["ts"].dt.epoch("us").to_list() == [t - DAY, t]  # prediction times
    assert outcome_spine(tmp_path, "m", keys, days=10, now_us=t + 10 * S).height == 3
    with pytest.raises(MonitorError, match="widen --days"):
        outcome_spine(tmp_path, "m", keys, days=2, now_us=t + 5 * DAY)


def test_spine_errors_say_what_to_do(tmp_path):
    with pytest.raises(MonitorError, match="request-time"):
        entity_keys_of(["card_pay:count_1h", "age"], REPO)
    with pytest.raises(MonitorError, match="no labelled predictions"):
        outcome_spine(tmp_path, "m", ("bank", "card_id"), days=1)
    _log(tmp_path, [("a", DAY, "c1", "champion")], [(1.0, DAY + S, "a", None)])
    with pytest.raises(MonitorError, match="do not have the 2 parts"):
        outcome_spine(tmp_path, "m", ("bank", "card_id"), days=1, now_us=DAY + S)
