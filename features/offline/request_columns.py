"""Request-time features in training sets: the scorer's function over spine columns.

The request fields of a ``RequestFeatureView`` are spine columns of the same names (what the
request carried at that time); its inputs are the point-in-time features of the same training
set. Both go to the function as float64 columns with NaN for null, exactly what the scorer
hands it, and its outputs come back as ``view__feature`` columns (NaN stored as null, like any
missing feature).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from features.definitions import FeatureRepo, parse_ref
from features.errors import OfflineStoreError
from features.request import RequestFeatureView


def split_refs(repo: FeatureRepo, refs: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(stored refs, request-feature refs, stored refs only the request features read)."""
    stored, request = [], []
    for r in refs:
        view, feat = parse_ref(r)
        rv = repo.requests.get(view)
        if rv is None:
            stored.append(r)
            continue
        if feat not in rv.features:
            from features.errors import UnknownFeatureError

            raise UnknownFeatureError(f"request feature view {view!r} has no feature {feat!r}; "
                                      f"it has {', '.join(rv.features)}")
        request.append(r)
    extra = []
    for rv in _views(repo, request):
        extra += [i for i in rv.inputs.values() if i not in stored and i not in extra]
    return stored, request, extra


def _views(repo: FeatureRepo, refs: list[str]) -> list[RequestFeatureView]:
    names = list(dict.fromkeys(parse_ref(r)[0] for r in refs))
    return [repo.requests[n] for n in names]


def _float(s: pl.Series, what: str) -> np.ndarray:
    try:
        return s.cast(pl.Float64).to_numpy()
    except pl.exceptions.PolarsError as e:
        raise OfflineStoreError(f"{what} has type {s.dtype}; request features read numbers") from e


def request_columns(repo: FeatureRepo, refs: list[str], spine: pl.DataFrame,
                    features: dict[str, pl.Series]) -> dict[str, pl.Series]:
    """The requested request-feature columns, computed from ``spine`` and the stored feature
    columns ``features`` (``view__feature`` -> Series, inputs included)."""
    from features.offline.training_set import column_name

    out: dict[str, pl.Series] = {}
    n = spine.height
    wanted = set(refs)
    for rv in _views(repo, refs):
        cols: dict[str, np.ndarray] = {}
        for field in rv.request:
            if field not in spine.columns:
                raise OfflineStoreError(
                    f"request feature view {rv.name!r} reads request field {field!r}: the spine "
                    f"needs a column {field!r} with what each request carried (spine columns: "
                    f"{', '.join(spine.columns)})")
            cols[field] = _float(spine[field], f"spine column {field!r}")
        for arg, ref in rv.inputs.items():
            cols[arg] = _float(features[column_name(*parse_ref(ref))], f"input {ref}")
        with np.errstate(all="ignore"):  # x/0 is inf/NaN for the model, online too
            computed = rv.compute(cols, n)
        for f, values in computed.items():
            if f"{rv.name}:{f}" in wanted:
                col = column_name(rv.name, f)
                out[col] = pl.Series(col, values, dtype=pl.Float64).fill_nan(None)
    return out
