import json
import logging
import time

import polars as pl

from serving.monitoring.alerts import Alerter
from serving.monitoring.reference import build_reference
from serving.monitoring.simulate import FEATURES, prediction_log, reference_columns
from serving.monitoring.sources import ModelTarget
from serving.monitoring.watch import MonitorWatch


def test_watch_fires_alerts_on_its_own_and_skips_models_without_reference(caplog):
    cols = reference_columns(n=5000)
    score = cols.pop("score")
    target = ModelTarget("3", build_reference(cols, score), FEATURES)
    frames = {"log": prediction_log(1, 1000)}

    def lookup(name):
        if name == "fraud":
            return target
        from serving.monitoring.errors import MonitorError

        raise MonitorError(f"no reference for {name}")

    caplog.set_level(logging.WARNING)
    watch = MonitorWatch(
        lambda: ["fraud", "unknown"],
        lookup,
        lambda: frames["log"],
        Alerter(),
        interval_s=0.05,
        rows=1000,
    ).start()
    try:
        deadline = time.monotonic() + 5
        while watch.checks < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert watch.last["fraud"]["status"] == "ok"
        frames["log"] = pl.concat([frames["log"], prediction_log(2, 1000, shift=2.0, t0=10**9)])
        while watch.last["fraud"]["status"] != "alert" and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        watch.stop()
    assert watch.last["fraud"]["status"] == "alert"
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "tessera.monitor"]
    raised = [(e["column"], e["kind"], e["state"]) for e in events]
    assert raised.count(("amount", "drift", "raised")) == 1  # once, however many rounds ran
    assert any("monitor of unknown skipped" in r.getMessage() for r in caplog.records)
