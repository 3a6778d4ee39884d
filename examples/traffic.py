"""A service in front of the scorer, for the README's tour: it asks for predictions, then
reports what happened (the labels) for each, as a card issuer's fraud desk would days later.

    python examples/traffic.py --requests 3000

The scorer's address is ``serve.host``/``serve.port`` from the settings (tessera.yaml or
``TESSERA_SERVE__PORT``), its token ``TESSERA_TOKEN`` (scopes ``predict`` and ``outcomes``).
Labels come from a fixed synthetic truth (likelier fraud for users with a recent spending
burst), so a better model shows it in ``tessera experiment report``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from features.settings import Settings  # noqa: E402
from serving.client import ScorerClient  # noqa: E402

BURST = "user_spend:amount_sum_1h"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fraud", help="model to ask")
    ap.add_argument("--requests", type=int, default=3000, help="prediction requests")
    ap.add_argument("--users", type=int, default=10_000, help="users u0..uN-1 to ask about")
    ap.add_argument("--batch", type=int, default=50, help="entities per request")
    ap.add_argument("--seed", type=int, default=3, help="random seed")
    args = ap.parse_args(argv)
    serve = Settings.from_env().serve
    rng = np.random.default_rng(args.seed)
    sent = labelled = 0
    arms: dict[str, int] = {}
    with ScorerClient(f"http://{serve.host}:{serve.port}", timeout_s=10) as client:
        for start in range(0, args.requests, args.batch):
            n = min(args.batch, args.requests - start)
            users = [{"user_id": f"u{u}"} for u in rng.integers(args.users, size=n)]
            got = client.predict(args.model, users)["predictions"]
            burst = client.features([BURST], users)["values"]
            outcomes = []
            for p, (spend,) in zip(got, burst, strict=True):
                arm = p.get("arm") or "champion"
                arms[arm] = arms.get(arm, 0) + 1
                truth = 1 / (1 + np.exp(3 - (spend or 0.0) / 150))
                outcomes.append({"request_id": p["request_id"],
                                 "label": int(rng.random() < truth)})
            client.outcomes(outcomes)
            sent += n
            labelled += len(outcomes)
    by_arm = ", ".join(f"{a}: {c}" for a, c in sorted(arms.items()))
    print(f"{sent} predictions of {args.model} ({by_arm}), {labelled} outcomes reported")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
