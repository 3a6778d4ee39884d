"""A registry holding models trained on synthetic online features, over a real Redis."""

import time

from serving.registry import ModelRegistry
from serving.registry.training import train
from serving.scorer.synthetic import write_training_set, write_users

USERS = 600
PARAMS = {"num_iterations": 30, "num_leaves": 7}


def make_world(client, tmp_path):
    """(redis client, registry with fraud v1 = champion and v2, query time)."""
    now = time.time_ns() // 1000
    risky = write_users(client, USERS, now, seed=3)
    path = tmp_path / "train.parquet"
    write_training_set(client, path, USERS, risky, now)
    reg = ModelRegistry(tmp_path / "models")
    for seed in (1, 2):
        res = train(path, "label", params={**PARAMS, "num_leaves": 5 + seed}, seed=seed)
        reg.register("fraud", res.model_text, res.metadata())
    reg.set_alias("fraud", "champion", "1", who="test", why="first")
    return client, reg, now
