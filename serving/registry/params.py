"""LightGBM parameter names: refuse a misspelt one before training instead of ignoring it.

LightGBM itself only logs "Unknown parameter" (and not at all with ``verbosity=-1``), so a typo
such as ``num_leafs`` trains a model with the default silently. The list of every parameter and
its aliases comes from LightGBM's own C API (``LGBM_DumpParamAliases``, the function the Python
package uses for its alias table), so it matches the installed version exactly.
"""

from __future__ import annotations

import ctypes
import difflib
import functools
import json
from typing import Any

from serving.registry.errors import TrainingRefused

# read by the Python package, not by the C++ config (lgb.train / Dataset handle them)
PYTHON_ONLY = frozenset({"categorical_feature", "feature_name"})


@functools.cache
def aliases() -> dict[str, str]:
    """Every accepted name (parameter or alias) -> its canonical parameter name."""
    from lightgbm.basic import _LIB, _safe_call

    size = 1 << 20
    for _ in range(2):
        out_len = ctypes.c_int64(0)
        buf = ctypes.create_string_buffer(size)
        _safe_call(_LIB.LGBM_DumpParamAliases(ctypes.c_int64(size), ctypes.byref(out_len), buf))
        if out_len.value <= size:
            break
        size = out_len.value
    table: dict[str, list[str]] = json.loads(buf.value.decode())
    names = {k: k for k in table}
    for k, alts in table.items():
        for a in alts:
            names.setdefault(a, k)
    return names


def canonical(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with LightGBM's canonical names; unknown names raise ``TrainingRefused``."""
    known = aliases()
    unknown = [k for k in params if k not in known and k not in PYTHON_ONLY]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, list(known), n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TrainingRefused(
            f"unknown LightGBM parameter{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
            "LightGBM would ignore it and train with its default. Names: "
            "https://lightgbm.readthedocs.io/en/latest/Parameters.html",
            "unknown_param",
        )
    out: dict[str, Any] = {}
    for k, v in params.items():
        name = known.get(k, k)
        if name in out and out[name] != v:
            raise TrainingRefused(
                f"parameter {name!r} is given twice with different values (as {k!r} too); "
                "keep one", "duplicate_param"
            )
        out[name] = v
    return out
