"""Join late labels to logged predictions, with a maximum delay.

An outcome names the request it answers (``request_id``) or only the entity and the time it was
observed; the latter is matched to the entity's latest *served* prediction at or before it
(an as-of join), and through that request id to every shadow that scored the same request.
An outcome later than ``max_delay_s`` after its prediction does not count: the prediction stays
unlabelled, so a slow label pipeline shows up as a low labelled share, not as bias.
"""

from __future__ import annotations

import polars as pl


def join_outcomes(preds: pl.DataFrame, outcomes: pl.DataFrame, max_delay_s: float) -> pl.DataFrame:
    """``preds`` plus a ``label`` column (null when no outcome arrived in time)."""
    max_delay = int(max_delay_s * 1_000_000)
    o = outcomes.select(
        pl.col("request_id").cast(pl.String),
        pl.col("entity_key").cast(pl.String),
        pl.col("ts").cast(pl.Int64).alias("o_ts"),
        pl.col("label").cast(pl.Float64),
    )
    by_request = o.filter(pl.col("request_id").is_not_null()).select("request_id", "o_ts", "label")
    by_entity = o.filter(pl.col("request_id").is_null() & pl.col("entity_key").is_not_null())
    if by_entity.height:
        served = (
            preds.filter(pl.col("role") != "shadow")
            .select("entity_key", pl.col("ts").alias("p_ts"), pl.col("request_id").alias("rid"))
            .sort("p_ts")
        )
        matched = (
            by_entity.drop("request_id")
            .sort("o_ts")
            .join_asof(
                served,
                left_on="o_ts",
                right_on="p_ts",
                by="entity_key",
                strategy="backward",
                tolerance=max_delay,
                check_sortedness=False,  # both sides are sorted just above
            )
            .filter(pl.col("rid").is_not_null())
            .select(pl.col("rid").alias("request_id"), "o_ts", "label")
        )
        by_request = pl.concat([by_request, matched])
    labels = by_request.sort("o_ts").unique("request_id", keep="last", maintain_order=False)
    out = preds.join(labels, on="request_id", how="left")
    in_time = (pl.col("o_ts") - pl.col("ts")) <= max_delay
    return out.with_columns(
        pl.when(in_time).then(pl.col("label")).otherwise(None).alias("label")
    ).drop("o_ts")
