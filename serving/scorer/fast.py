"""Single-row LightGBM prediction without ``Booster.predict``'s Python overhead.

``Booster.predict`` on one row costs ~120 µs for a 300-tree model here, mostly argument
checking and array conversion in Python. LightGBM's C API has a "fast single row" entry point
that takes a pre-built configuration; calling it through ctypes with pre-bound arguments costs a
few µs plus the tree walk. Batches still go through ``Booster.predict`` (its overhead is per
call, not per row). If the C entry points are missing (an old or unusual build), ``predict_one``
falls back to ``Booster.predict`` automatically -- same numbers, slower.
"""

from __future__ import annotations

import ctypes
import logging

import numpy as np

log = logging.getLogger(__name__)

_C_API_PREDICT_NORMAL = 0
_C_API_DTYPE_FLOAT64 = 1


class FastPredictor:
    """Predict with one booster: ``predict_one(x)`` for a row, ``predict(X)`` for a matrix."""

    def __init__(self, booster, fast: bool = True) -> None:
        self.booster = booster
        self.n_features = booster.num_feature()
        self._config = None
        self._lib = None
        if fast:
            try:
                self._init_fast()
            except Exception as e:  # any failure here only costs speed
                log.warning("LightGBM fast single-row API unavailable (%r); using predict()", e)
                self._config = None

    @property
    def is_fast(self) -> bool:
        return self._config is not None

    def _init_fast(self) -> None:
        from lightgbm.basic import _LIB, _safe_call

        init = _LIB.LGBM_BoosterPredictForMatSingleRowFastInit
        self._call = _LIB.LGBM_BoosterPredictForMatSingleRowFast
        self._call.restype = ctypes.c_int
        self._call.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        handle = ctypes.c_void_p()
        _safe_call(
            init(
                self.booster._handle,
                ctypes.c_int(_C_API_PREDICT_NORMAL),
                ctypes.c_int(0),
                ctypes.c_int(-1),
                ctypes.c_int(_C_API_DTYPE_FLOAT64),
                ctypes.c_int32(self.n_features),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(handle),
            )
        )
        self._lib = _LIB
        self._config = handle

    def predict_one(self, x: np.ndarray) -> float:
        """Score of one row (float64, C-contiguous, ``n_features`` long)."""
        if self._config is None:
            return float(self.booster.predict(x.reshape(1, -1))[0])
        out = ctypes.c_double()
        n = ctypes.c_int64()
        rc = self._call(self._config, x.ctypes.data, ctypes.addressof(n), ctypes.addressof(out))
        if rc != 0:
            from lightgbm.basic import _LIB

            raise RuntimeError(_LIB.LGBM_GetLastError().decode())
        return out.value

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores of a matrix: one row goes through the fast path, more through LightGBM."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.shape[0] == 1:
            return np.array([self.predict_one(x[0])])
        return self.booster.predict(x, num_threads=1)

    def close(self) -> None:
        if self._config is not None and self._lib is not None:
            self._lib.LGBM_FastConfigFree(self._config)
            self._config = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
