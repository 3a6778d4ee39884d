"""What TLS + an ACL user cost the scorer's Redis read, side by side with plaintext.

    .venv/bin/python bench/redis_tls.py [--quick]

One ``HMGET`` of 10 fields of one key through ``features.online.hmget.HashReads`` (the
scorer's read), three ways in interleaved rounds on the same machine:

- ``plain_fast``: plaintext Redis, the busy-poll fast path (the default);
- ``plain_pipeline``: plaintext Redis through a redis-py pipeline (the path TLS falls back to),
  to separate the fallback's cost from TLS's;
- ``tls_acl``: Debian's redis-server on a TLS port with an ACL user, through the clients
  ``features.online.connection`` makes (pipeline fallback).

Connections are made before timing (the TLS handshake is paid once per pooled connection).
Writes ``bench/results/redis_tls.json`` and prints medians and p99 in µs and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from features.online.connection import RedisTransport, connect  # noqa: E402
from features.online.hmget import HashReads  # noqa: E402
from tessera.local import start_redis, stop  # noqa: E402
from tests.transport.conftest import PASSWORD, USER, start_tls_redis  # noqa: E402

KEY, FIELDS = "tessera:user:u1", [f"f{i}" for i in range(10)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds, per_round = (20, 100) if args.quick else (60, 200)
    with tempfile.TemporaryDirectory() as tmp:
        plain_proc, plain_url = start_redis(Path(tmp) / "plain")
        tls_proc, tls = start_tls_redis(Path(tmp) / "tls")
        try:
            plain = connect(plain_url, socket_timeout=1)
            secure = connect(tls.url, RedisTransport(USER, PASSWORD, tls_ca=tls.ca),
                             socket_timeout=1)
            for c in (plain, secure):
                c.hset(KEY, mapping={f: "1.5" for f in FIELDS})
            fast, tls_reads = HashReads(plain), HashReads(secure)
            keys = [(KEY, FIELDS)]
            variants = {"plain_fast": lambda: fast.fetch(keys),
                        "plain_pipeline": lambda: fast._pipelined(keys),
                        "tls_acl": lambda: tls_reads.fetch(keys)}
            for fn in variants.values():
                assert fn() == [[b"1.5"] * len(FIELDS)]
            samples: dict[str, list[float]] = {k: [] for k in variants}
            for _ in range(rounds):
                for name, fn in variants.items():
                    for _ in range(per_round):
                        t0 = time.perf_counter_ns()
                        fn()
                        samples[name].append((time.perf_counter_ns() - t0) / 1000)
        finally:
            stop(plain_proc)
            stop(tls_proc)
    out = {}
    for name, xs in samples.items():
        xs.sort()
        out[name] = {"p50_us": round(statistics.median(xs), 1),
                     "p99_us": round(xs[int(len(xs) * 0.99)], 1), "n": len(xs)}
    base = out["plain_fast"]["p50_us"]
    for v in out.values():
        v["p50_vs_plain_fast"] = round(v["p50_us"] / base, 2)
    result = {"what": "HashReads.fetch of one key x 10 fields", "quick": args.quick,
              "variants": out}
    path = ROOT / "bench" / "results" / "redis_tls.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'variant':<16}{'p50 us':>9}{'p99 us':>9}{'x plain_fast':>14}")
    for name, v in out.items():
        print(f"{name:<16}{v['p50_us']:>9}{v['p99_us']:>9}{v['p50_vs_plain_fast']:>14}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
