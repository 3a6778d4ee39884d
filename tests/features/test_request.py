"""Request feature views: declaration checks, versions from the function's source, and the
errors a user acts on (what raised, which view, which spine column is missing)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from features import BatchFeatureView, Entity
from features.definitions import FeatureRepo
from features.errors import DefinitionError, OfflineStoreError, UnknownFeatureError
from features.offline.training_set import training_set
from features.request import RequestFeatureError, RequestFeatureView, request_feature
from features.settings import Settings

user = Entity("user", keys=["user_id"])
profile = BatchFeatureView("p", user, "p.parquet", "ts", {"limit": "float"}, ttl="10d")


def ratio(amount, limit):
    return amount / limit


def test_declaration_errors_name_what_to_fix():
    with pytest.raises(DefinitionError, match=r"has no parameter for \['other'\]"):
        RequestFeatureView("r", ratio, "x", request=["amount", "other"],
                           inputs={"limit": "p:limit"})
    with pytest.raises(DefinitionError, match="request fields are numbers"):
        RequestFeatureView("r", ratio, "x", request={"amount": "string"})
    with pytest.raises(UnknownFeatureError, match="bad feature reference"):
        RequestFeatureView("r", ratio, "x", request=["amount"], inputs={"limit": "nocolon"})
    rv = RequestFeatureView("p", ratio, "x", request=["amount"], inputs={"limit": "p:limit"})
    with pytest.raises(DefinitionError, match="name both a feature view and a request"):
        FeatureRepo.of([profile, rv])


def test_version_follows_the_function_source():
    a = RequestFeatureView("r", ratio, "x", request=["amount"], inputs={"limit": "p:limit"})

    def ratio2(amount, limit):
        return amount / (limit + 1)

    b = RequestFeatureView("r", ratio2, "x", request=["amount"], inputs={"limit": "p:limit"})
    assert a.version == RequestFeatureView("r", ratio, "x", request=["amount"],
                                           inputs={"limit": "p:limit"}).version
    assert a.version != b.version


def test_compute_shapes_and_errors_name_the_view():
    @request_feature(["a", "b"], request=["amount"])
    def two(amount):
        return amount * 2, 1.0  # a scalar broadcasts to every row

    out = two.compute({"amount": np.array([1.0, 2.0])}, 2)
    assert out["a"].tolist() == [2.0, 4.0] and out["b"].tolist() == [1.0, 1.0]

    @request_feature("a", request=["amount"])
    def boom(amount):
        raise ZeroDivisionError("no")

    with pytest.raises(RequestFeatureError, match=r"'boom': boom\(\) raised ZeroDivisionError"):
        boom.compute({"amount": np.array([1.0])}, 1)

    @request_feature(["a", "b"], request=["amount"])
    def short(amount):
        return {"a": amount}

    with pytest.raises(RequestFeatureError, match=r"returned no \['b'\]"):
        short.compute({"amount": np.array([1.0])}, 1)

    @request_feature("a", request=["amount"])
    def words(amount):
        return ["x"]

    with pytest.raises(RequestFeatureError, match="words:a"):
        words.compute({"amount": np.array([1.0])}, 1)


def test_training_set_needs_the_request_fields_as_spine_columns(tmp_path):
    (tmp_path / "batch").mkdir()
    pl.DataFrame({"user_id": ["a"], "ts": [0], "limit": [4.0]}).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC"))).write_parquet(tmp_path / "batch" / "p.parquet")
    rv = RequestFeatureView("r", ratio, "x", request=["amount"], inputs={"limit": "p:limit"})
    repo = FeatureRepo.of([profile, rv])
    spine = pl.DataFrame({"user_id": ["a", "a"], "ts": [1, 2], "amount": [2.0, None]}
                         ).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))
    df = training_set(spine, ["r:x"], repo=repo, settings=Settings(tmp_path))
    assert df.columns == ["user_id", "ts", "amount", "r__x"]  # the input is not an output
    assert df["r__x"].to_list() == [0.5, None]
    with pytest.raises(OfflineStoreError, match="needs a column 'amount'"):
        training_set(spine.drop("amount"), ["r:x"], repo=repo, settings=Settings(tmp_path))
