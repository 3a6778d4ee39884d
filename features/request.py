"""Request-time features: one vectorised function over request fields and stored features.

A ``RequestFeatureView`` (or ``@request_feature``) declares the request fields it reads
(numbers, given per entity in the predict request's ``request_features`` and, offline, as spine
columns of the same names), the stored features it reads (``view:feature`` refs, bound to
argument names) and the features it outputs. The function is called with one numpy float64
column per argument (a null is NaN) and returns the outputs: a dict ``{name: column}``, a
tuple in declared order, or one column when it declares one feature.

The scorer calls it per request on the request body and the features it fetched in the same
round trip; ``training_set()`` calls it on spine columns and point-in-time features. Same
function, same float64 inputs: the same values. The version hashes the declaration and the
function's source, so editing the function is a new version, as editing a view is.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from features.definitions import _check_name, parse_ref
from features.errors import DefinitionError, TesseraError

_F64 = np.dtype(np.float64)


class RequestFeatureError(TesseraError):
    """The function of a request feature view raised, or returned the wrong shape."""

    def __init__(self, view: str, message: str) -> None:
        self.view = view
        super().__init__(message)


class MissingRequestField(TesseraError):
    """A request lacks a field a request feature view reads (HTTP 422 naming the field)."""

    def __init__(self, view: str, field: str, row: int | None) -> None:
        self.view = view
        self.field = field
        self.row = row
        where = "" if row is None else f" (entity {row})"
        super().__init__(f"request feature view {view!r} needs request field {field!r}{where}; "
                         f"send it in request_features (null if unknown)")


def _source_of(fn: Callable) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):  # defined where no source is kept (a REPL): hash the bytecode
        code = getattr(fn, "__code__", None)
        return repr(code.co_code + repr(code.co_consts).encode()) if code else repr(fn)


@dataclass(frozen=True, eq=False)
class RequestFeatureView:
    """Features computed at request time by ``fn`` (see the module docstring)."""

    name: str
    request: dict[str, str]
    inputs: dict[str, str]
    features: tuple[str, ...]
    fn: Callable[..., Any]
    description: str = ""

    def __init__(self, name: str, fn: Callable[..., Any], features: list[str] | str,
                 request: list[str] | dict[str, str] | None = None,
                 inputs: Mapping[str, str] | None = None, description: str = "") -> None:
        _check_name(name, "request feature view")
        features = [features] if isinstance(features, str) else list(features)
        if not features:
            raise DefinitionError(f"request feature view {name!r} declares no features")
        for f in features:
            _check_name(f, f"request feature view {name!r} feature")
        req = {r: "float" for r in request} if isinstance(request, list) else dict(request or {})
        for r, t in req.items():
            if t not in ("float", "int", "bool"):
                raise DefinitionError(f"request feature view {name!r}: request field {r!r} is "
                                      f"{t}; request fields are numbers (float, int or bool)")
        inputs = dict(inputs or {})
        for arg, ref in inputs.items():
            parse_ref(ref)
            if arg in req:
                raise DefinitionError(f"request feature view {name!r}: {arg!r} is both a "
                                      "request field and an input; rename one")
        if not req and not inputs:
            raise DefinitionError(f"request feature view {name!r} reads nothing: give request= "
                                  "fields and/or inputs= features")
        params = inspect.signature(fn).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        missing = [a for a in [*req, *inputs] if a not in params and not takes_any]
        if missing:
            raise DefinitionError(f"request feature view {name!r}: {fn.__name__}() has no "
                                  f"parameter for {missing}; it is called with one keyword "
                                  "argument per request field and input")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "request", req)
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "features", tuple(features))
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "description", description)

    @property
    def feature_names(self) -> list[str]:
        return list(self.features)

    def spec(self) -> dict:
        return {"kind": "request", "name": self.name, "request": self.request,
                "inputs": self.inputs, "features": list(self.features),
                "source": _source_of(self.fn)}

    @property
    def version(self) -> str:
        text = json.dumps(self.spec(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def compute(self, columns: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """Every feature for ``n`` rows from float64 ``columns`` keyed by argument name;
        ``RequestFeatureError`` (naming the view) when the function raises or returns
        something that is not one length-``n`` number column per feature. numpy's floating
        point warnings (x/0) are the caller's to silence: the values are the same either way."""
        try:
            out = self.fn(**columns)
        except Exception as e:  # noqa: BLE001 - any user error is reported with the view
            raise RequestFeatureError(self.name, f"request feature view {self.name!r}: "
                                      f"{self.fn.__name__}() raised {type(e).__name__}: {e}"
                                      ) from e
        if type(out) is dict or isinstance(out, Mapping):
            try:
                cols = [out[f] for f in self.features]
            except KeyError:
                absent = [f for f in self.features if f not in out]
                raise RequestFeatureError(self.name, f"request feature view {self.name!r}: "
                                          f"{self.fn.__name__}() returned no {absent}") from None
        elif isinstance(out, tuple):
            cols = list(out)
        else:
            cols = [out]
        if len(cols) != len(self.features):
            raise RequestFeatureError(self.name, f"request feature view {self.name!r}: "
                                      f"{self.fn.__name__}() returned {len(cols)} columns for "
                                      f"{len(self.features)} features {list(self.features)}")
        result = {}
        for f, c in zip(self.features, cols, strict=True):
            if type(c) is np.ndarray and c.dtype is _F64 and len(c) == n and c.ndim == 1:
                result[f] = c  # the usual case, checked in a few comparisons
                continue
            try:
                arr = np.broadcast_to(np.asarray(c, dtype=np.float64), (n,))
            except (TypeError, ValueError) as e:
                raise RequestFeatureError(self.name, f"request feature {self.name}:{f}: "
                                          f"{self.fn.__name__}() returned {type(c).__name__} "
                                          f"that is not {n} number(s): {e}") from e
            result[f] = arr
        return result


def request_feature(features: list[str] | str, request: list[str] | dict[str, str] | None = None,
                    inputs: Mapping[str, str] | None = None, name: str | None = None,
                    description: str = "") -> Callable[[Callable], RequestFeatureView]:
    """Decorator form: ``@request_feature(["ratio"], request=["amount"],
    inputs={"mean": "user_spend:amount_mean_24h"})`` over ``def txn(amount, mean): ...``
    makes the view ``txn`` (or ``name``)."""
    def wrap(fn: Callable) -> RequestFeatureView:
        return RequestFeatureView(name or fn.__name__, fn, features, request, inputs,
                                  description or (fn.__doc__ or "").strip())
    return wrap
