"""Raw transactions on a topic of their own, turned into the scorer's features by a real worker.

Shared by the tests that go from events on Kafka through ``tessera worker`` to the monitor
(``test_drift_through_worker``) and to retraining (``test_retrain_from_outcomes``).
"""

from __future__ import annotations

import numpy as np
import pytest

from features.offline.event_log import EventLog
from features.online.layout import applied_offset, offset_key
from serving.scorer import synthetic as syn
from streams.producer import Publisher
from streams.topics import delete_topics, ensure_topics
from tests.streams.conftest import StreamEnv, wait_for

# The scorer's synthetic views (the model's inputs), rebuilt over a topic of our own.
REPO_TEMPLATE = '''
from features.definitions import Aggregate, EventSource, FeatureView
from serving.scorer import synthetic as syn

txn = EventSource(syn.TXN.name, syn.TXN.schema, syn.TXN.timestamp_field, syn.TXN.entity,
                  topic="{topic}", partitions=2)
txn_counts, txn_spend, txn_spread = (
    FeatureView(v.name, txn, [Aggregate(f.fn, [f.window], field=f.field, hop=f.hop, name=f.name)
                              for f in v.features])
    for v in syn.VIEWS
)
'''


def user_transactions(
    prefix: str, n: int, now: int, seed: int, scale: float
) -> tuple[dict[str, list[tuple[int, float]]], np.ndarray]:
    """(ts µs, amount) events of users ``{prefix}0..`` drawn like the training users, amounts
    times ``scale`` (1.0 = no drift; the number and timing of purchases never change), and
    which users are risky (the training label)."""
    rng = np.random.default_rng(seed)
    risky = rng.random(n) < 0.2  # the training mix
    users = {
        f"{prefix}{i}": [(t, round(scale * a, 2)) for t, a in syn.user_events(rng, now, bool(r))]
        for i, r in enumerate(risky)
    }
    return users, risky


def publish_and_wait(env: StreamEnv, client, events: list[dict], offline: bool = False) -> None:
    """Send ``events`` and wait until the worker's Redis offset watermarks cover them all (and,
    with ``offline``, the offline event log's committed offsets too)."""
    with Publisher(env.source, env.bootstrap) as pub:
        report = pub.publish(events)
    assert report.sent == len(events) and not report.rejected and not report.failed
    topic = env.source.topic

    def applied() -> bool:
        for p, last in report.last_offsets.items():
            v = client.get(offset_key(env.group, topic, p))
            if v is None or applied_offset(v) < last:
                return False
        return True

    wait_for(applied, 60, "the worker to apply the published events", every=0.2)
    if offline:
        log = EventLog(env.home / "offline")

        def logged() -> bool:
            marks = [log.committed_offset(env.source, topic, p) for p in report.last_offsets]
            return all(m is not None and m >= report.last_offsets[p]
                       for m, p in zip(marks, report.last_offsets, strict=True))

        wait_for(logged, 60, "the worker to write the events to the offline log", every=0.2)


@pytest.fixture
def worker_env(kafka_bootstrap, redis_url, redis_client, unique_name, tmp_path):
    """A stream env whose repo defines the scorer's views over a fresh topic."""
    repo_path = tmp_path / "repo.py"
    repo_path.write_text(REPO_TEMPLATE.format(topic=unique_name))
    env = StreamEnv(kafka_bootstrap, redis_url, tmp_path / "home", repo_path, f"g-{unique_name}")
    env.home.mkdir()
    ensure_topics([env.source], kafka_bootstrap)
    yield env
    env.stop_all()
    delete_topics([unique_name, f"{unique_name}.dlq", f"{unique_name}.repartition",
                   f"{unique_name}-pred",
                   f"{unique_name}-out"], kafka_bootstrap)
