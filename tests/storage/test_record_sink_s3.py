"""The prediction/outcome logs (serving.experiments.sink) on a real S3-protocol server: the
Kafka -> Parquet sink commits through the same manifest protocol as the event log, a crash
before the manifest leaves nothing visible, and racing ``import_frame`` writers keep every
file."""

from __future__ import annotations

import threading
import uuid

import polars as pl
import pytest

from features.offline.storage import Store
from serving.experiments.records import PREDICTION_SCHEMA
from serving.experiments.sink import ParquetSink, import_frame, load_manifest, read_dataset
from tests.serving.experiments.test_kafka_log import CrashAfterFiles, produce, records, topic

pytestmark = pytest.mark.integration
__all__ = ["topic"]  # the fixture, used by name


@pytest.fixture
def folder(s3_bucket) -> str:
    return f"s3://{s3_bucket[1]}/{uuid.uuid4().hex[:8]}/experiments/predictions"


def test_sink_to_s3_survives_a_crash_without_duplicates(kafka_bootstrap, topic, folder):
    produce(kafka_bootstrap, topic, records(400))
    crashing = CrashAfterFiles(kafka_bootstrap, topic, folder, PREDICTION_SCHEMA,
                               flush_records=10**9)
    with pytest.raises(KeyboardInterrupt):
        crashing.run(idle_s=1.0)
    crashing._consumer.close()
    store = Store(folder)
    on_store = {e.rel for e in store.list_files() if e.rel.endswith(".parquet")}
    assert on_store and not load_manifest(folder)["files"]  # written, never committed
    assert len(read_dataset(folder, PREDICTION_SCHEMA)) == 0
    again = ParquetSink(kafka_bootstrap, topic, folder, PREDICTION_SCHEMA, flush_records=150)
    assert again.run(idle_s=1.0) == 400
    again.close()
    df = read_dataset(folder, PREDICTION_SCHEMA)
    assert len(df) == 400 and df["request_id"].n_unique() == 400
    assert sorted(df["ts"].to_list()) == [1_000_000 * i for i in range(400)]


def test_racing_imports_keep_every_file(folder):
    errors: list[BaseException] = []
    start = threading.Barrier(3)

    def writer(i: int) -> None:
        start.wait()
        try:
            for k in range(3):
                import_frame(folder, pl.DataFrame({"writer": [i], "k": [k]}))
        except BaseException as e:  # collected for the test
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    files = load_manifest(folder)["files"]
    assert len(files) == len(set(files)) == 9
    store = Store(folder)
    df = pl.concat([pl.from_arrow(store.read_table(f)) for f in files])
    assert sorted(df.iter_rows()) == sorted((i, k) for i in range(3) for k in range(3))
