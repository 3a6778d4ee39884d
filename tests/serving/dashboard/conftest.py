"""A real headless Chromium for the dashboard tests (Debian's, driven by playwright).

If ``/usr/bin/chromium`` is missing the fixture installs it with apt-get (root only, a few
minutes once per machine); it skips, saying why, only when that cannot be done.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

CHROMIUM = os.environ.get("TESSERA_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def ensure_chromium() -> str | None:
    """Path of a Chromium binary, installing Debian's package if needed; None with no way."""
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        if subprocess.run(cmd, env=env, capture_output=True, timeout=900).returncode != 0:
            return None
    return CHROMIUM if os.path.exists(CHROMIUM) else None


@pytest.fixture(scope="session")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    path = ensure_chromium()
    if path is None:
        pytest.skip(
            f"no Chromium at {CHROMIUM} and it could not be installed (needs root and apt-get: "
            "`apt-get install -y chromium`, or set TESSERA_CHROMIUM to a Chromium binary)"
        )
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=FLAGS, headless=True)
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def serve():
    """Start a FastAPI app under a real uvicorn server on 127.0.0.1; yields its base URL."""
    import uvicorn

    servers = []

    def start(app) -> str:
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 10 s")
            time.sleep(0.02)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=5)


def block_other_origins(page, base: str) -> list[str]:
    """Abort every request of ``page`` that leaves ``base``; returns the list they go to (the
    pages must work offline: no CDN)."""
    outside: list[str] = []

    def route(r):
        if r.request.url.startswith(base):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return outside
