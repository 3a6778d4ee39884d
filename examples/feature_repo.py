"""The demo feature repo: card transactions keyed by user.

``tessera apply --repo examples/feature_repo.py`` records these definitions; the stream worker
and the training-set builder both compute from them.
"""

from features import Aggregate, BatchFeatureView, Entity, EventSource, FeatureView, request_feature

user = Entity("user", keys=["user_id"], description="A card holder")

transactions = EventSource(
    name="transactions",
    schema={
        "user_id": "string",
        "merchant_id": "string",
        "amount": "float",
        "country": "string",
        "ts": "timestamp",
    },
    timestamp_field="ts",
    entity=user,
    partitions=4,
    description="Card transactions, one event per authorisation",
)

WINDOWS = ["1h", "24h", "7d"]

user_txn_count = FeatureView(
    "user_txn_count", transactions, [Aggregate("count", WINDOWS, name="txn_count_{window}")]
)
user_spend = FeatureView(
    "user_spend",
    transactions,
    [Aggregate("sum", WINDOWS, field="amount"), Aggregate("mean", WINDOWS, field="amount")],
)
user_spend_max = FeatureView(
    "user_spend_max", transactions, [Aggregate("max", WINDOWS, field="amount")]
)

user_profile = BatchFeatureView(
    "user_profile",
    entity=user,
    path="user_profile.parquet",  # relative to $TESSERA_HOME/batch/
    timestamp_field="ts",
    schema={"account_age_days": "int", "credit_limit": "float"},
    ttl="90d",
)


@request_feature(
    ["amount_over_mean_24h", "amount_over_limit"],
    request=["amount"],  # the authorisation being scored, from the request body
    inputs={"mean_24h": "user_spend:amount_mean_24h", "limit": "user_profile:credit_limit"},
)
def txn_now(amount, mean_24h, limit):
    """This amount against the user's 24 h mean and against their credit limit."""
    return {"amount_over_mean_24h": amount / mean_24h, "amount_over_limit": amount / limit}
