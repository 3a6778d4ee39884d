import json

import numpy as np
import pytest

from serving.monitoring.errors import MonitorError
from serving.monitoring.reference import (
    ColumnReference,
    ModelReference,
    build_column_reference,
    build_reference,
)
from serving.monitoring.simulate import reference_columns


def test_reference_round_trips_through_json():
    cols = reference_columns(n=5000)
    score = cols.pop("score")
    ref = build_reference(cols, score)
    back = ModelReference.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert back == ref
    assert list(back.columns()) == [*cols, "score"]


def test_bins_hold_the_exact_training_shares():
    rng = np.random.default_rng(0)
    x = rng.normal(size=10_001)
    ref = build_column_reference(x)
    assert len(ref.edges) == 9
    assert sum(ref.proportions) == pytest.approx(1.0)
    counts = np.bincount(np.searchsorted(ref.edges, x, side="left"), minlength=10)
    assert np.allclose(counts / x.size, ref.proportions)
    assert ref.low == x.min() and ref.high == x.max()


def test_point_mass_gets_one_bin_and_nulls_are_counted():
    x = [0.0] * 90 + [1.0] * 8 + [None, float("nan")]
    ref = build_column_reference(x)
    assert ref.null_rate == pytest.approx(0.02)
    assert ref.count == 100
    assert ref.edges == (0.0,)  # every decile of 98 values is 0
    assert ref.proportions == pytest.approx((90 / 98, 8 / 98))


def test_all_null_column_is_empty_not_an_error():
    ref = build_column_reference([None, None])
    assert ref.empty and ref.null_rate == 1.0


def test_malformed_reference_says_what_to_do():
    with pytest.raises(MonitorError, match="expected keys"):
        ColumnReference.from_dict({"quantiles": [1, 2]})
    with pytest.raises(MonitorError, match="one more proportion"):
        ColumnReference((1.0,), (1.0,), (1.0,), 0.0, 1)
