"""Dense entity codes for training sets, found through a 64-bit key hash and checked exactly.

The builder folds events by small int codes of the spine's distinct entity keys. Hash tables
over string keys are what cost most at scale (10M spine rows, 50M events: ~5 s of CPU per
``unique`` or ``join`` on strings here, against 0.1 s to hash them), so codes are assigned and
events joined on ``hash(keys)`` (a u64) instead, and every matched row's key is then compared
with its code's own key. A hash collision, however unlikely, is therefore seen, never silently
merged: the caller then joins on the keys themselves (``exact=True``), as before.
"""

from __future__ import annotations

import numpy as np
import polars as pl

CODE = "__tessera_code"
MISMATCH = "__tessera_key_mismatch"  # a row whose key is not its code's key: a collision
_HASH = "__tessera_key_hash"
_MINE = "__tessera_key_"  # prefix of the code table's own keys in a join


def _key_hash(keys: tuple[str, ...]) -> pl.Expr:
    cols = [pl.col(k) for k in keys]
    return (cols[0] if len(cols) == 1 else pl.struct(cols)).hash().alias(_HASH)


def _any_null(keys: tuple[str, ...]) -> pl.Expr:
    return pl.any_horizontal([pl.col(k).is_null() for k in keys])


def codes(skeys: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """(code table: keys, hash and ``CODE`` per distinct key, in order of first appearance;
    code per row). Rows with a null in their key get the code ``len(table)``, which no event
    has."""
    keys = tuple(skeys.columns)
    hashed = skeys.with_columns(_key_hash(keys))
    uniq = (hashed.filter(~_any_null(keys)).unique(subset=_HASH, maintain_order=True)
            .with_row_index(CODE).with_columns(pl.col(CODE).cast(pl.Int64)))
    joined = hashed.join(uniq.select(_HASH, CODE, *[pl.col(k).alias(_MINE + k) for k in keys]),
                         on=_HASH, how="left", maintain_order="left")
    null = joined.select(_any_null(keys)).to_series()
    clash = joined.select(pl.any_horizontal(
        [pl.col(k).ne_missing(pl.col(_MINE + k)) for k in keys]) & ~null).to_series()
    if clash.any():  # two of the spine's keys share a hash: codes of the keys themselves
        uniq = (skeys.filter(~_any_null(keys)).unique(maintain_order=True)
                .with_row_index(CODE).with_columns(pl.col(CODE).cast(pl.Int64))
                .with_columns(_key_hash(keys)))
        joined = skeys.join(uniq, on=list(keys), how="left", maintain_order="left")
    q_code = joined[CODE].fill_null(uniq.height).to_numpy(writable=True)
    q_code[null.to_numpy()] = uniq.height
    return uniq, q_code


def with_codes(lf: pl.LazyFrame, uniq: pl.DataFrame, keys: tuple[str, ...],
               exact: bool = False) -> pl.LazyFrame:
    """``lf``'s rows of the code table's entities, with ``CODE`` and ``MISMATCH`` (always
    false when ``exact``: joined on the keys themselves)."""
    if exact:
        return (lf.join(uniq.select(*keys, CODE).lazy(), on=list(keys), how="inner")
                .with_columns(pl.lit(False).alias(MISMATCH)))
    mine = uniq.select(_HASH, CODE, *[pl.col(k).alias(_MINE + k) for k in keys]).lazy()
    return (lf.with_columns(_key_hash(keys)).join(mine, on=_HASH, how="inner")
            .with_columns(pl.any_horizontal([pl.col(k).ne_missing(pl.col(_MINE + k))
                                             for k in keys]).alias(MISMATCH)))
