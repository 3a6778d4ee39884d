"""Prediction log through the real broker into Parquet, exactly once in effect."""

import pytest

from features.kafka_admin import create_topics, delete_topics
from serving.experiments.kafka_log import KafkaRecordLog
from serving.experiments.records import PREDICTION_SCHEMA, PredictionRecord
from serving.experiments.sink import (
    MANIFEST,
    ParquetSink,
    import_frame,
    load_manifest,
    read_dataset,
)

pytestmark = pytest.mark.integration


def records(n, start=0):
    return [
        PredictionRecord(
            request_id=f"r{i}",
            ts=1_000_000 * i,
            entity_key=f"user_id=u{i % 37}",
            model="fraud",
            version="1",
            role="champion",
            arm="champion",
            score=i / (n + start),
            latency_ms=0.1,
            features_hash="h",
        )
        for i in range(start, start + n)
    ]


@pytest.fixture
def topic(kafka_bootstrap, unique_name):
    create_topics([unique_name], kafka_bootstrap, partitions=3)
    yield unique_name
    delete_topics([unique_name], kafka_bootstrap)


def produce(bootstrap, topic, recs):
    log = KafkaRecordLog(bootstrap, topic, linger_ms=5, per_message=40)
    for r in recs:
        assert log.log(r)
    log.close()
    assert log.sent == len(recs) and log.dropped == 0


class CrashAfterFiles(ParquetSink):
    """Dies after writing the Parquet files and before the manifest commit."""

    def _commit(self, manifest):
        raise KeyboardInterrupt("crash")


def test_log_to_parquet_survives_a_crash_without_duplicates(kafka_bootstrap, topic, tmp_path):
    produce(kafka_bootstrap, topic, records(700))
    out = tmp_path / "predictions"
    first = ParquetSink(kafka_bootstrap, topic, out, PREDICTION_SCHEMA, flush_records=300)
    assert first.run(idle_s=1.0) == 700
    first.close()
    assert len(read_dataset(out, PREDICTION_SCHEMA)) == 700

    produce(kafka_bootstrap, topic, records(1300, start=700))

    crashing = CrashAfterFiles(kafka_bootstrap, topic, out, PREDICTION_SCHEMA, flush_records=10**9)
    with pytest.raises(KeyboardInterrupt):
        crashing.run(idle_s=1.0)
    orphans = {p.name for p in out.glob("*.parquet")} - set(load_manifest(out)["files"])
    assert orphans  # the crash left files the manifest never committed
    crashing._consumer.close()

    produce(kafka_bootstrap, topic, records(500, start=2000))
    again = ParquetSink(kafka_bootstrap, topic, out, PREDICTION_SCHEMA, flush_records=300)
    again.run(idle_s=1.5)
    again.close()
    df = read_dataset(out, PREDICTION_SCHEMA)
    assert len(df) == 2500
    assert df["request_id"].n_unique() == 2500
    assert sorted(df["ts"].to_list()) == [1_000_000 * i for i in range(2500)]
    assert {p.name for p in out.glob("*.parquet")} == set(load_manifest(out)["files"])
    assert (out / MANIFEST).exists()


def test_malformed_records_are_skipped_and_counted(kafka_bootstrap, topic, tmp_path):
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    p.send(topic, b"not json", partition=0)
    p.send(topic, records(1)[0].to_bytes(), partition=0)
    p.send(topic, b'[1, "x"]', partition=1)  # an array of non-records
    p.flush()
    p.close()
    sink = ParquetSink(kafka_bootstrap, topic, tmp_path / "o", PREDICTION_SCHEMA)
    assert sink.run(idle_s=1.0) == 1
    sink.close()
    assert sink.bad_records == 3
    assert len(read_dataset(tmp_path / "o", PREDICTION_SCHEMA)) == 1
    # every offset was consumed, so a restart has nothing to redo
    assert load_manifest(tmp_path / "o")["next_offsets"] == {"0": 2, "1": 1}


def test_sink_command_copies_both_topics(kafka_bootstrap, unique_name, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from serving.experiments.records import OUTCOME_SCHEMA, OutcomeRecord
    from serving.experiments.report import dataset_dirs
    from tessera.cli import _register, app

    preds_topic, outs_topic = f"{unique_name}-p", f"{unique_name}-o"
    create_topics([preds_topic, outs_topic], kafka_bootstrap)
    try:
        produce(kafka_bootstrap, preds_topic, records(30))
        log = KafkaRecordLog(kafka_bootstrap, outs_topic, linger_ms=5)
        for i in range(12):
            log.log(OutcomeRecord(1.0, 0, request_id=f"r{i}"))
        log.close()
        monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
        monkeypatch.setenv("KAFKA_BOOTSTRAP", kafka_bootstrap)
        _register()
        res = CliRunner().invoke(
            app,
            ["experiment", "sink", "--predictions-topic", preds_topic,
             "--outcomes-topic", outs_topic, "--idle", "1"],
            catch_exceptions=False,
        )
        assert res.exit_code == 0, res.output
        assert f"{preds_topic}: 30 records" in res.output
        pred_dir, out_dir = dataset_dirs(tmp_path / "offline")
        assert len(read_dataset(pred_dir, PREDICTION_SCHEMA)) == 30
        assert read_dataset(out_dir, OUTCOME_SCHEMA)["request_id"].n_unique() == 12
    finally:
        delete_topics([preds_topic, outs_topic], kafka_bootstrap)


def test_imported_frames_join_the_committed_dataset(tmp_path):
    import polars as pl

    folder = tmp_path / "p"
    a = pl.DataFrame({"request_id": ["a", "b"], "ts": [1, 2]})
    import_frame(folder, a)
    import_frame(folder, a.with_columns(pl.lit("c").alias("request_id")))
    (folder / "stray.parquet").write_bytes(b"not listed, not read")
    schema = PREDICTION_SCHEMA
    assert sorted(read_dataset(folder, schema, columns=["request_id"])["request_id"]) == [
        "a", "b", "c", "c"
    ]


def test_outcomes_published_as_source_events_are_normalised(kafka_bootstrap, topic, tmp_path):
    """`tessera produce --source outcomes` sends validated events with ISO timestamps and the
    entity's key columns; the outcome sink turns them into outcome rows."""
    from features.definitions import Entity, EventSource
    from serving.experiments.records import OUTCOME_SCHEMA, outcome_normalizer
    from streams.producer import publish

    user = Entity("user", ["user_id"])
    source = EventSource(
        "outcomes", {"user_id": "string", "label": "float", "ts": "timestamp"}, "ts", user,
        topic=topic,
    )
    events = [{"user_id": f"u{i}", "label": float(i % 2), "ts": 1_700_000_000_000 + i}
              for i in range(20)]
    assert publish(source, events, kafka_bootstrap).sent == 20
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    p.send(topic, b'{"label": 1, "ts": "not a time", "request_id": "x"}')
    p.send(topic, records(1)[0].to_bytes())  # no label: not an outcome
    p.flush()
    p.close()
    sink = ParquetSink(kafka_bootstrap, topic, tmp_path / "o", OUTCOME_SCHEMA,
                       normalize=outcome_normalizer(("user_id",)))
    sink.run(idle_s=1.0)
    sink.close()
    df = read_dataset(tmp_path / "o", OUTCOME_SCHEMA).sort("ts")
    assert sink.bad_records == 2
    assert df["entity_key"].to_list() == [f"u{i}" for i in range(20)]
    assert df["ts"].to_list() == [(1_700_000_000_000 + i) * 1000 for i in range(20)]
    assert df["label"].sum() == 10 and df["request_id"].null_count() == 20
