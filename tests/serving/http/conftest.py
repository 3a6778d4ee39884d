"""Run the scorer app in a real uvicorn server on a free port, in a thread of the test."""

import threading
import time
from contextlib import contextmanager

import uvicorn

from tessera.local import free_port


@contextmanager
def running(app):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        if time.monotonic() - t0 > 10:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def wait_until_up(url: str, proc, within_s: float = 30.0, log_file=None) -> None:
    """Poll ``url`` until it answers 200; if ``proc`` exits first, fail with its stderr (a pipe,
    or ``log_file`` when stderr went to a file)."""
    import httpx

    deadline = time.monotonic() + within_s
    while True:
        if proc.poll() is not None:
            if log_file is not None:
                tail = log_file.read_text()[-2000:]
            else:
                raw = proc.stderr.read() if proc.stderr else b""
                tail = (raw.decode() if isinstance(raw, bytes) else raw)[-2000:]
            raise AssertionError(f"{proc.args} exited with {proc.returncode}: {tail}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer 200 within {within_s} s"
        time.sleep(0.1)
