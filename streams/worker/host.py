"""Run the batch worker inside a faust-streaming app.

faust owns the process: start-up and shutdown order, logging, the service tree that later
services (metrics, tables) hang off. The hot path stays the worker's own batch consumer
(aiokafka, faust's client) because faust's per-event agent dispatch costs ~100x our budget
(see ``bench/faust_baseline.py``): the app hosts one service whose task is ``Worker._run``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import faust
import mode

from features.kafka_config import faust_credentials
from streams.worker.app import Worker

log = logging.getLogger("tessera.worker")


def run_in_faust(
    worker: Worker, datadir: Path, max_idle_s: float | None = None, log_level: str = "warning",
    logging_config: dict | None = None,
) -> None:
    """Block until the worker stops (signal, idle limit or error); re-raise its error.

    ``logging_config`` (a ``logging.config`` dict) replaces faust's own colour logging set-up."""
    cfg = worker.cfg
    outcome: dict[str, BaseException] = {}
    datadir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        f"tessera-host-{cfg.group}",
        broker=f"kafka://{cfg.bootstrap}",
        broker_credentials=faust_credentials(cfg.kafka_security),
        web_enabled=False,
        datadir=str(datadir),
        broker_session_timeout=max(6, cfg.session_timeout_ms // 1000),
        broker_heartbeat_interval=1,
        broker_rebalance_timeout=max(6, cfg.session_timeout_ms // 1000),
    )
    host: faust.Worker | None = None

    class BatchWorker(mode.Service):
        """The Tessera batch worker as a faust service."""

        _task: asyncio.Future | None = None

        async def on_started(self) -> None:
            self._task = asyncio.ensure_future(self._main())

        async def _main(self) -> None:
            try:
                await worker._run(max_idle_s)
            except BaseException as e:  # noqa: BLE001 - handed back to the caller
                outcome["error"] = e
            finally:
                await host.stop()

        async def on_stop(self) -> None:
            worker.stop()
            task = self._task
            if task is not None and task is not asyncio.current_task() and not task.done():
                await asyncio.wait([task], timeout=60)

    app.service(BatchWorker)
    host = faust.Worker(app, loglevel=log_level.lower().replace("warning", "warn"), quiet=True,
                        logging_config=dict(logging_config) if logging_config else None)
    if not sys.stdout.isatty():
        host.spinner = None  # its cursor escapes would land in log files and the stats line
    try:
        host.execute_from_commandline()
    except SystemExit as e:
        if e.code not in (0, None) and "error" not in outcome:
            raise
    if "error" in outcome:
        raise outcome["error"]
