"""The README's tours, run as written: every command of their bash blocks, in order, on a broker
and Redis of their own (``tessera up``), so a README that drifts from the code fails here.

The streaming tour has commands that keep running until stopped (``generate``, ``worker``,
``serve``, ``monitor watch``): they run in the background and are stopped where a user would
stop them. The files the README calls yours (``labels.parquet``, the batch profiles,
``events.parquet``...) are written by the test from the events it generated, and only those.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tessera.local import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
STEP_TIMEOUT_S = 240


def bash_block(after_heading: str) -> list[tuple[str, str]]:
    """The commands of the first ```bash block under a README heading, each with its comment:
    continuation lines joined, blank and comment-only lines dropped."""
    text = README.read_text()
    section = text[text.index(f"## {after_heading}\n"):]
    body = section[section.index("```bash\n") + 8:]
    body = body[:body.index("```\n")]
    out: list[tuple[str, str]] = []
    for line in body.replace("\\\n", " ").splitlines():
        code, _, comment = line.partition("#")
        if code.strip():
            out.append((" ".join(code.split()), comment.strip()))
    return out


@dataclass
class Tour:
    """Runs tour lines as a shell would, with the environment the ``export`` lines build."""

    cwd: Path
    env: dict[str, str]
    background: dict[str, subprocess.Popen]
    log: list[str]

    def argv(self, line: str) -> list[str]:
        words = shlex.split(line)
        if words[0] == "tessera":
            return [sys.executable, "-m", "tessera", *words[1:]]
        if words[0] == "python":
            return [sys.executable, *words[1:]]
        raise AssertionError(f"the tour runs only tessera and python commands, not: {line}")

    def run(self, line: str, ok: tuple[int, ...] = (0,)) -> str:
        m = re.fullmatch(r"export (\w+)=\$\((.*)\)", line)
        if m:
            self.env[m.group(1)] = self.run(m.group(2)).strip()
            return ""
        t0 = time.monotonic()
        out = subprocess.run(self.argv(line), cwd=self.cwd, env=self.env, capture_output=True,
                             text=True, timeout=STEP_TIMEOUT_S)
        self.log.append(f"$ {line}  [{time.monotonic() - t0:.1f} s, rc {out.returncode}]\n"
                        f"{out.stdout[-3000:]}{out.stderr[-3000:]}")
        assert out.returncode in ok, "\n".join(self.log[-3:])
        return out.stdout

    def start(self, line: str) -> subprocess.Popen:
        name = " ".join(shlex.split(line)[:2])
        f = open(self.cwd / f"{len(self.background)}.log", "w")  # noqa: SIM115 - closed by stop
        p = subprocess.Popen(self.argv(line), cwd=self.cwd, env=self.env, stdout=f,
                             stderr=subprocess.STDOUT, start_new_session=True)
        p.log_path = f.name  # type: ignore[attr-defined]
        self.background[name] = p
        self.log.append(f"$ {line} &")
        return p

    def stop(self, p: subprocess.Popen, sig: int = signal.SIGINT) -> str:
        """Ctrl-C, as a user stops it; then the process group, if it lingers."""
        if p.poll() is None:
            os.killpg(p.pid, sig)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        text = Path(p.log_path).read_text()  # type: ignore[attr-defined]
        self.log.append(text[-2000:])
        return text


def _wait(check: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _caught_up(tour: Tour) -> Callable[[], bool]:
    """The worker has everything: the audit's expected offsets stop growing, with no gap."""
    seen: list[int] = []

    def check() -> bool:
        out = subprocess.run(tour.argv("tessera audit --source transactions"), cwd=tour.cwd,
                             env=tour.env, capture_output=True, text=True)
        rows = [r.split() for r in out.stdout.splitlines() if r.split() and r.split()[0].isdigit()]
        seen.append(sum(int(r[4]) for r in rows) if out.returncode == 0 and rows else -1)
        return len(seen) >= 3 and seen[-1] > 0 and seen[-1] == seen[-2] == seen[-3]

    return check


def _events(home: Path) -> pl.DataFrame:
    from examples.feature_repo import transactions
    from features.offline.event_log import EventLog
    from features.settings import Settings

    settings = Settings.from_env(home)
    return EventLog(settings.offline_location).scan(transactions).collect()


def _write_labels(tour: Tour, home: Path) -> None:
    """labels.parquet: the user's (user_id, ts, is_fraud) rows, a second after some events.
    Fraud follows the user's spending of the last hour (what ``user_spend:amount_sum_1h``
    measures), strongly enough that the model passes its AUC gate on any run."""
    ev = _events(home).select("user_id", "ts", "amount").sort("user_id", "ts")
    spend = ev.rolling("ts", period="1h", group_by="user_id").agg(
        pl.col("amount").sum().alias("spend_1h"))
    rows = spend.sample(min(4000, spend.height), seed=1)
    rank = rows["spend_1h"].rank().to_numpy() / rows.height  # 0..1, by spending
    rng = np.random.default_rng(1)
    truth = 1 / (1 + np.exp(-(8 * rank - 6)))
    rows.select("user_id", pl.col("ts") + pl.duration(seconds=1)).with_columns(
        pl.Series("is_fraud", (rng.random(rows.height) < truth).astype(np.int8))
    ).write_parquet(tour.cwd / "labels.parquet")


def _write_profiles(home: Path) -> None:
    """The batch view's file, as a daily profile job would write it."""
    users = _events(home)["user_id"].unique().sort()
    rng = np.random.default_rng(4)
    (home / "batch").mkdir(exist_ok=True)
    pl.DataFrame({
        "user_id": users,
        "ts": [int((time.time() - 86_400) * 1e6)] * len(users),
        "account_age_days": rng.integers(1, 3000, len(users)),
        "credit_limit": np.round(rng.lognormal(8, 0.5, len(users)), 2),
    }).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC"))).write_parquet(
        home / "batch" / "user_profile.parquet")


def _ready(port: int) -> Callable[[], bool]:
    import httpx

    def check() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def _tour(tmp_path: Path) -> tuple[Tour, Path, int]:
    home, cwd = tmp_path / "home", tmp_path / "work"
    cwd.mkdir()
    (cwd / "examples").symlink_to(ROOT / "examples")  # the tour's relative paths
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TESSERA_", "KAFKA_", "REDIS_"))}
    env.update(TESSERA_HOME=str(home), TESSERA_SERVE__PORT=str(port),
               PYTHONPATH=str(ROOT))
    return Tour(cwd, env, {}, []), home, port


@pytest.mark.integration
@pytest.mark.slow
def test_the_streaming_tour_runs_as_written(tmp_path):
    lines = bash_block("Streaming, serving, experiments, monitoring")
    assert lines[0][0] == "tessera up" and lines[-1][0] == "tessera down"
    tour, home, port = _tour(tmp_path)
    outputs: dict[str, str] = {}
    try:
        for line, comment in lines:
            cmd = " ".join(shlex.split(line)[:2])
            if cmd == "tessera generate":
                p = tour.start(line)
                time.sleep(4)
                assert "events to transactions" in tour.stop(p)
            elif cmd == "tessera worker":
                tour.start(line)
                _wait(_caught_up(tour), "the worker to consume every event", 180)
            elif cmd == "tessera backfill":  # the README: stop the worker first
                tour.stop(tour.background.pop("tessera worker"), signal.SIGTERM)
                outputs[cmd] = tour.run(line)
            elif cmd == "tessera materialize":
                _write_profiles(home)
                outputs[cmd] = tour.run(line)
            elif cmd == "tessera training-set":
                _write_labels(tour, home)
                outputs[cmd] = tour.run(line)
            elif cmd == "tessera serve":
                tour.start(line)
                _wait(_ready(port), "the scorer's /readyz", 180)
            elif line.startswith("tessera monitor watch"):
                p = tour.start(line)
                _wait(lambda p=p: "watching fraud" in Path(p.log_path).read_text()
                      or p.poll() is not None, "monitor watch to start", 120)
                assert p.poll() is None, tour.stop(p)  # still watching
                assert "watching fraud" in tour.stop(p)
            elif cmd == "tessera down":
                for name in list(tour.background):
                    tour.stop(tour.background.pop(name))
                outputs[cmd] = tour.run(line)
            else:  # "exits 1 on X": a finding, not a failure of the tour
                ok = (0, 1) if "exits 1" in comment else (0,)
                outputs[line.split(" --")[0]] = tour.run(line, ok)
    finally:
        for p in tour.background.values():
            tour.stop(p, signal.SIGKILL)
        subprocess.run(tour.argv("tessera down"), cwd=tour.cwd, env=tour.env,
                       capture_output=True, timeout=60)
    log = "\n".join(tour.log)
    # what each step promises, on what this run produced
    assert re.search(r"user_spend: \d+ entities x \d+ features, 0 mismatches",
                     outputs["tessera skew-check"]), log
    assert "no gaps" in outputs["tessera audit"], log
    assert re.search(r"\d+ events", outputs["tessera backfill"]), log
    assert re.search(r"[1-9]\d* entities", outputs["tessera materialize"]), log
    assert (tour.cwd / "train.parquet").exists()
    report = outputs["tessera experiment report fraud"]
    rows = {who: next(r for r in report.splitlines() if r.startswith(who))  # the table's row
            for who in ("champion v1", "arm challenger v2", "shadow v3")
            if any(r.startswith(who) for r in report.splitlines())}
    # the shadow child runs at idle priority by design: on a machine whose cores are all taken
    # (the rest of the suite beside this test) it scores nothing and its jobs are dropped and
    # counted, so its row may be absent; the served arms always have one
    assert {"champion v1", "arm challenger v2"} <= set(rows), report
    for who, row in rows.items():
        assert int(row.split()[len(who.split()) + 1]) > 0, (who, report)  # labelled
    assert '"champion": "2"' in outputs["tessera promote fraud"], log
    assert re.search(r"\d+ predictions of fraud .*3000 outcomes reported",
                     outputs["python examples/traffic.py"]), log
    assert "status" in outputs["tessera monitor report fraud"], log
    assert '"version"' in outputs["tessera retrain fraud"], log


@pytest.mark.slow
def test_the_parquet_tour_runs_as_written(tmp_path):
    """No Kafka: your repo file, your events and your spine to a training set."""
    from examples.feature_repo import transactions
    from streams.generate import transactions as synthetic

    lines = bash_block("Your own Parquet events to a training set (no Kafka needed)")
    tour, home, _ = _tour(tmp_path)
    shutil.copy(ROOT / "examples" / "feature_repo.py", tour.cwd / "my_repo.py")
    now = time.time_ns() // 1000
    events = [e for e in synthetic(5000, start_us=now - 86_400_000_000, rate=5000 / 86_400,
                                   users=200, seed=3) if isinstance(e, dict)]
    frame = pl.DataFrame(events).with_columns(
        pl.col(transactions.timestamp_field).str.to_datetime(time_zone="UTC"))
    frame.write_parquet(tour.cwd / "events.parquet")
    frame.select("user_id", pl.col("ts") + pl.duration(seconds=1)).sample(500, seed=2) \
        .write_parquet(tour.cwd / "spine.parquet")
    for line, _ in lines:
        tour.run(line)
    out = pl.read_parquet(tour.cwd / "train.parquet")
    assert out.height == 500
    assert {"user_spend__amount_sum_1h", "user_txn_count__txn_count_7d"} <= set(out.columns)
    assert out["user_txn_count__txn_count_7d"].min() >= 1  # each row a second after an event
