"""Stream fixtures: a throwaway feature repo on a unique topic, workers as real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streams.topics import delete_topics, ensure_topics
from tessera.cli_streams import load_repo

REPO_TEMPLATE = '''
from features import Aggregate, Entity, EventSource, FeatureView

user = Entity("user", keys=["user_id"])
src = EventSource(
    name="txn", topic="{topic}", timestamp_field="ts", entity=user, partitions={partitions},
    schema={{"user_id": "string", "merchant_id": "string", "amount": "float",
            "country": "string", "ts": "timestamp"}},
)
W = ["10m", "2h"]
counts = FeatureView("counts", src, [Aggregate("count", W)])
spend = FeatureView("spend", src, [
    Aggregate("sum", W, field="amount"), Aggregate("mean", W, field="amount"),
    Aggregate("stddev", W, field="amount"),
])
extremes = FeatureView("extremes", src, [
    Aggregate("min", W, field="amount"), Aggregate("max", ["10m", "1d"], field="amount"),
    Aggregate("last", W, field="amount"),
])
'''
VIEWS = ("counts", "spend", "extremes")


@dataclass
class StreamEnv:
    bootstrap: str
    redis_url: str
    home: Path
    repo_path: Path
    group: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def repo(self):
        return load_repo(self.repo_path)

    @property
    def source(self):
        return self.repo.sources["txn"]

    def start_worker(self, max_records: int = 200, metrics_port: int = 0,
                     commit_interval: float = 1.0) -> subprocess.Popen:
        env = {**os.environ, "KAFKA_BOOTSTRAP": self.bootstrap, "REDIS_URL": self.redis_url,
               "TESSERA_HOME": str(self.home)}
        log = open(self.home / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-c", "from tessera.cli import main; main()", "worker",
             "--repo", str(self.repo_path), "--group", self.group,
             "--max-records", str(max_records), "--session-timeout-ms", "6000",
             "--metrics-port", str(metrics_port), "--commit-interval", str(commit_interval)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def wait_for(cond, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _stream_env(kafka_bootstrap, redis_url, unique_name, tmp_path):
    repo_path = tmp_path / "repo.py"
    repo_path.write_text(REPO_TEMPLATE.format(topic=unique_name, partitions=3))
    env = StreamEnv(kafka_bootstrap, redis_url, tmp_path / "home", repo_path, f"g-{unique_name}")
    env.home.mkdir()
    ensure_topics([env.source], kafka_bootstrap)
    try:
        yield env
    finally:  # also when a test closes the generator itself: no worker outlives its test
        env.stop_all()
        delete_topics([unique_name, f"{unique_name}.dlq", f"{unique_name}.repartition"],
                      kafka_bootstrap)


@pytest.fixture
def stream_env(kafka_bootstrap, redis_url, redis_client, unique_name, tmp_path):
    yield from _stream_env(kafka_bootstrap, redis_url, unique_name, tmp_path)


@pytest.fixture
def any_stream_env(kafka_bootstrap, any_redis_url, any_redis_client, unique_name, tmp_path):
    """``stream_env`` on each topology in turn (the worker gets ``any_redis_url``)."""
    yield from _stream_env(kafka_bootstrap, any_redis_url, unique_name, tmp_path)
