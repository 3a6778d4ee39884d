"""Forgetting an entity in an event log on a real S3-protocol server (moto): afterwards no
object under the log holds a row of it, the other rows are as before, and a training set equals
the local-disk one forgotten the same way."""

from __future__ import annotations

import random
import uuid

import polars as pl
import pytest

from features.offline.event_log import EventLog
from features.offline.forget import forget_events
from features.offline.storage import Store
from features.offline.training_set import training_set
from features.settings import Settings
from tests.features.offline.test_forget import GONE, IS_GONE, REFS
from tests.features.offline.test_training_set import REPO, SOURCE, _append, _events, _spine

pytestmark = pytest.mark.integration


def test_forget_on_s3_leaves_no_object_with_the_entity(s3_bucket, tmp_path):
    _, bucket = s3_bucket
    rng = random.Random(9)
    events, spine = _events(rng, 300), _spine(rng, 80)
    local = EventLog(tmp_path / "offline")
    remote = EventLog(f"s3://{bucket}/{uuid.uuid4().hex[:8]}/offline", retire_after_s=3600)
    for log in (local, remote):
        _append(log, events[:150])
        _append(log, events[150:])
    assert remote.compact(SOURCE) > 0  # retired objects that hold the entity too
    others = remote.scan(SOURCE).collect().filter(~IS_GONE).sort("_offset")
    n = remote.scan(SOURCE).collect().filter(IS_GONE).height
    assert forget_events(remote, SOURCE, GONE).rows == n > 0
    forget_events(local, SOURCE, GONE)
    store = Store(remote.root)
    objects = [e.rel for e in store.list_files() if e.rel.endswith(".parquet")]
    assert objects
    for rel in objects:  # every object, listed by the manifest or not
        df = pl.from_arrow(store.read_table(rel))
        assert df.filter(IS_GONE).height == 0, rel
    assert remote.scan(SOURCE).collect().sort("_offset").equals(others)
    settings = Settings(tmp_path)
    want = training_set(spine, REFS, repo=REPO, settings=settings, event_log=local)
    got = training_set(spine, REFS, repo=REPO, settings=settings, event_log=remote)
    assert got.equals(want)
