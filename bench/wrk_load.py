"""HTTP load with ``wrk`` (C, epoll): POST bodies cycled from a list, keep-alive connections.

The machine has 2 cores shared by the server, Redis and the load generator, so the generator's
own CPU comes out of the server's throughput (in ``--quick`` runs: 5.1k req/s at concurrency 16
with the Python asyncio generator in ``serve.py``, 6.5k with ``wrk``). ``wrk`` runs for a
duration, not a count; its Lua ``done`` hook prints the figures as JSON (latencies in µs from
its histogram).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

_SCRIPT = """
local bodies = {%s}
local n = #bodies
local reqs = {}
local i = 0
function init(args)
  for k = 1, n do
    reqs[k] = wrk.format("POST", "%s", {["Content-Type"] = "application/json"}, bodies[k])
  end
end
function request()
  i = i %% n + 1
  return reqs[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"errors": %%d, "non_2xx": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def available() -> str | None:
    """``wrk``'s version line, or None when it is not installed."""
    if shutil.which("wrk") is None:
        return None
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).splitlines()[0].split(" [")[0]


def wrk_load(port: int, path: str, bodies: list[bytes], seconds: float, concurrency: int) -> dict:
    """Same keys as ``serve.http_load``: p50_ms, p99_ms, rps, requests (one wrk thread)."""
    lua = ",".join("[==[" + b.decode() + "]==]" for b in bodies)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_SCRIPT % (lua, path))
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
             "-s", str(script), f"http://127.0.0.1:{port}{path}"],
            capture_output=True, text=True, check=True,
        )
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRKJSON "))
    r = json.loads(line[len("WRKJSON "):])
    if r["errors"] or r["non_2xx"]:
        raise SystemExit(f"wrk saw failed requests: {r}\n{out.stdout}")
    return {"p50_ms": r["p50_us"] / 1e3, "p99_ms": r["p99_us"] / 1e3,
            "rps": r["requests"] / (r["duration_us"] / 1e6), "requests": r["requests"]}
