"""tessera generate against a real broker: every event acknowledged and consumed, or exit 1."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from kafka import KafkaConsumer, TopicPartition

from streams.topics import delete_topics
from tessera.local import start_broker, stop
from tests.streams.conftest import REPO_TEMPLATE


def _generate(bootstrap: str, repo, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "TESSERA_HOME": str(repo.parent)}
    return subprocess.Popen(
        [sys.executable, "-c", "from tessera.cli import main; main()", "generate",
         "--source", "txn", "--repo", str(repo), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _consume_all(bootstrap: str, topic: str, partitions: int) -> int:
    """Records on the topic, counted as consumed (the dev broker's end offsets are too low)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      consumer_timeout_ms=2000)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        return sum(1 for _ in c)
    finally:
        c.close()


def test_generate_sends_every_event_and_exits_0(kafka_bootstrap, unique_name, tmp_path):
    repo = tmp_path / "repo.py"
    repo.write_text(REPO_TEMPLATE.format(topic=unique_name, partitions=2))
    try:
        proc = _generate(kafka_bootstrap, repo, "--count", "600", "--rate", "0", "--seed", "3")
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        sent, malformed = int(out.split()[1]), int(out.split()[4])
        assert sent + malformed == 600 and malformed >= 1  # 0.2 % of 600 at seed 3
        assert _consume_all(kafka_bootstrap, unique_name, 2) == 600
    finally:
        delete_topics([unique_name, f"{unique_name}.dlq"], kafka_bootstrap)


def test_generate_exits_1_when_the_broker_goes_away(tmp_path, unique_name):
    broker, bootstrap = start_broker(tmp_path / "broker")
    repo = tmp_path / "repo.py"
    repo.write_text(REPO_TEMPLATE.format(topic=unique_name, partitions=2))
    proc = None
    try:
        proc = _generate(bootstrap, repo, "--rate", "2000", "--timeout", "3")
        # producing for real (its first event is readable), then for long enough that more
        # than 1,000 are acknowledged; a fixed sleep lost that race on a loaded machine
        first = KafkaConsumer(unique_name, bootstrap_servers=bootstrap,
                              auto_offset_reset="earliest", consumer_timeout_ms=90_000)
        assert next(iter(first), None) is not None, "generate produced nothing in 90 s"
        first.close()
        time.sleep(2)
        assert proc.poll() is None, proc.communicate()
        stop(broker)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, (out, err)
        assert "not acknowledged by the broker" in err
        sent = int(out.split()[1])
        assert sent > 1000  # what was acknowledged before the broker went is reported
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        stop(broker)
