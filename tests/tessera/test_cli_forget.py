"""``tessera forget`` on a real Redis (one node and a 3-primary cluster) and a local offline
store: afterwards no Redis key, hash field or value and no Parquet file holds the entity's key,
the other entities' hashes and rows are byte-for-byte what they were, training sets no longer
see it, and ``tessera audit log`` shows the OS user who did it."""

from __future__ import annotations

import json
import time

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from features.offline.event_log import EventLog
from features.offline.training_set import build_training_set
from features.online.cluster import connect, primaries
from features.online.layout import APPLIED_FIELD, GENERATION_FIELD, STORE_KEY, entity_key
from features.settings import Settings
from serving.experiments.report import dataset_dirs
from serving.experiments.sink import import_frame, read_dataset
from serving.scorer.synthetic import REPO, TXN, USER, ring_blobs, user_events, write_repo_file
from tessera import cli

pytestmark = pytest.mark.integration
GONE = "forget-me-7f3a"  # long enough that no ring's bytes hold it by chance
KEPT = ["keep-a", "keep-b", "keep-c"]
FEATURES = ["txn_counts:txn_count_7d", "txn_counts:amount_sum_7d"]


def every_key(client) -> dict[bytes, object]:
    """Every key on every primary with its whole content (hash: every field and value)."""
    out: dict[bytes, object] = {}
    for node in primaries(client):
        for key in node.scan_iter(count=1000):
            kind = node.type(key)
            out[key] = node.hgetall(key) if kind == b"hash" else node.dump(key)
    return out


def holds(content: object, needle: bytes) -> bool:
    if isinstance(content, dict):
        return any(needle in k or needle in v for k, v in content.items())
    return needle in (content or b"")


def every_parquet_value(root) -> list[str]:
    """Every string value of every column of every Parquet file under ``root``, and a mark
    for each file whose raw bytes (footer statistics included) hold the key."""
    found = []
    for path in sorted(root.rglob("*.parquet")):
        if GONE.encode() in path.read_bytes():
            found.append(f"raw bytes of {path}")
        df = pl.read_parquet(path)
        for name, dtype in df.schema.items():
            if dtype == pl.String:
                found += [f"{path}:{name}" for v in df[name].drop_nulls() if GONE in v]
    return found


@pytest.fixture
def world(tmp_path, any_redis_url, monkeypatch):
    now = time.time_ns() // 1000
    rng = np.random.default_rng(4)
    client = connect(any_redis_url)
    for node in primaries(client):
        node.flushdb()
    log = EventLog(Settings(tmp_path).offline_dir)
    offset = 0
    for user in [GONE, *KEPT]:
        events = user_events(rng, now, risky=user == GONE)
        client.hset(entity_key(USER, [user]), mapping={**ring_blobs(events),
                                                       APPLIED_FIELD: b"0:0:1"})
        log.append(TXN, pa.table({
            "user_id": [user] * len(events), "amount": [a for _, a in events],
            "ts": pa.array([t for t, _ in events], pa.timestamp("us", tz="UTC")),
            "_offset": list(range(offset, offset + len(events))),
            "_ingest_ts": pa.array([t for t, _ in events], pa.timestamp("us", tz="UTC")),
        }), topic="txn", partition=0)
        offset += len(events)
    client.hset(STORE_KEY, GENERATION_FIELD, "test")
    predictions, outcomes = dataset_dirs(Settings(tmp_path).offline_dir)
    for folder in (predictions, outcomes):
        import_frame(folder, pl.DataFrame({"entity_key": [GONE, *KEPT], "model": "fraud",
                                           "ts": [now] * 4, "score": [0.9, 0.1, 0.2, 0.3]}))
    repo = write_repo_file(tmp_path / "repo.py")
    for k, v in {"TESSERA_HOME": str(tmp_path), "REDIS_URL": any_redis_url,
                 "TESSERA_REPO": repo, "LOGNAME": "alice"}.items():
        monkeypatch.setenv(k, v)
    spine = pl.DataFrame({"user_id": [GONE, *KEPT],
                          "ts": [pl.Series([now]).cast(pl.Datetime("us", "UTC"))[0]] * 4})
    yield client, tmp_path, spine
    client.close()


def test_forget_erases_the_entity_and_nothing_else(world):
    client, home, spine = world
    settings = Settings(home)
    before = every_key(client)
    assert any(holds({k: b""}, GONE.encode()) for k in before)
    assert every_parquet_value(home)  # the world does hold it, so the checks below can fail
    kept_rows = EventLog(settings.offline_dir).scan(TXN).collect().filter(
        pl.col("user_id") != GONE).sort("_offset")
    trained = build_training_set(spine, FEATURES, repo=REPO, settings=settings).frame
    assert trained["txn_counts__txn_count_7d"][0] > 0
    cli._register()
    out = CliRunner().invoke(cli.app, ["forget", "--entity", GONE, "--why", "erasure #42",
                                       "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["online_keys"] == 1 and report["offline_rows"] > 0
    assert report["logged_rows"] == {"predictions": 1, "outcomes": 1}
    assert any("Kafka" in n for n in report["not_erased"])
    after = every_key(client)
    leaks = [k for k, c in after.items() if GONE.encode() in k or holds(c, GONE.encode())]
    assert not leaks
    assert after == {k: c for k, c in before.items() if GONE.encode() not in k}
    assert not every_parquet_value(home)
    log = EventLog(settings.offline_dir)
    assert log.scan(TXN).collect().sort("_offset").equals(kept_rows)
    for folder in dataset_dirs(settings.offline_dir):
        assert sorted(read_dataset(folder, pa.schema([]))["entity_key"]) == KEPT
    now = build_training_set(spine, FEATURES, repo=REPO, settings=settings).frame
    assert now["txn_counts__txn_count_7d"][0] == 0  # built afterwards: it is not seen
    assert now[1:].equals(trained[1:])
    audit = CliRunner().invoke(cli.app, ["audit", "log", "--json"])
    assert audit.exit_code == 0, audit.output
    (rec,) = [json.loads(line) for line in audit.stdout.splitlines()]
    assert (rec["who"], rec["action"], rec["why"]) == ("os:alice", "forget", "erasure #42")
    assert rec["entity"] == "user" and rec["online_keys"] == 1
    assert rec["offline_rows"] == report["offline_rows"] and GONE not in json.dumps(rec)


def test_forget_refuses_an_unknown_view(world):
    cli._register()
    out = CliRunner().invoke(cli.app, ["forget", "--entity", GONE, "--view", "nope"])
    assert out.exit_code != 0 and "unknown sources/views ['nope']" in str(out.exception)
