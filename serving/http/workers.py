"""Run N uvicorn worker processes, each on its own ``SO_REUSEPORT`` listening socket.

uvicorn's own ``--workers`` shares one listening socket between processes, and with keep-alive
clients whichever worker wins the accept race keeps the connection: measured here, one of two
workers got all 16 connections of a load test and the other sat idle. With ``SO_REUSEPORT`` the
kernel spreads new connections across the workers' sockets by hash (what gunicorn's
``--reuse-port`` does). The parent restarts a worker that dies and stops them all on SIGTERM.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serving.http.main import ServeConfig

log = logging.getLogger(__name__)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def uvicorn_config(cfg: ServeConfig, **kw):
    """uvicorn's config for the app of ``cfg``, built in this process."""
    import uvicorn

    from serving.http.main import app_from_settings

    if cfg.log_config is not None:  # before the app is built, so its start-up logs are JSON too
        import logging.config

        logging.config.dictConfig(cfg.log_config)
    return uvicorn.Config(
        app_from_settings(cfg), log_level=cfg.log_level.lower(), access_log=cfg.access_log,
        log_config=cfg.log_config,
        loop="uvloop" if _has("uvloop") else "asyncio",
        http="httptools" if _has("httptools") else "h11", **kw,
    )


def _worker(cfg: ServeConfig, host: str, port: int) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    uvicorn.Server(uvicorn_config(cfg)).run(sockets=[sock])


def serve(cfg: ServeConfig, host: str, port: int, workers: int) -> None:
    """Block serving the app of ``cfg`` in ``workers`` processes until SIGTERM/SIGINT."""
    if workers <= 1 or not hasattr(socket, "SO_REUSEPORT"):
        import uvicorn

        uvicorn.Server(uvicorn_config(cfg, host=host, port=port)).run()
        return
    ctx = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> multiprocessing.Process:
        p = ctx.Process(target=_worker, args=(cfg, host, port), daemon=False)
        p.start()
        return p

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    procs = [start() for _ in range(workers)]
    try:
        while not stopping:
            time.sleep(0.2)
            for i, p in enumerate(procs):
                if not p.is_alive() and not stopping:
                    log.warning("worker %s exited with %s; restarting it", p.pid, p.exitcode)
                    procs[i] = start()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
