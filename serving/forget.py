"""Forget one entity: the online hash, the event log (``features.forget``), the prediction and
outcome logs (``serving.experiments.forget``), and one audit record saying who did it.

``tessera forget`` and ``POST /v1/admin/forget`` both call ``forget_entity``; they differ only
in who is acting (``serving.auth.actor``). The audit record keeps the entity's name, a SHA-256
of its key (enough to answer "was this key forgotten?", without the audit log itself keeping
the identifier it was asked to erase) and the counts.
"""

from __future__ import annotations

import hashlib
from typing import Any

from features.definitions import FeatureRepo
from features.forget import ForgetPlan, forget, parse_key, plan
from features.offline.event_log import EventLog
from features.settings import Settings
from serving.auth import audit


def key_digest(values: tuple[str, ...] | list[str]) -> str:
    return hashlib.sha256("\x1f".join(values).encode()).hexdigest()


def forget_entity(settings: Settings, repo: FeatureRepo, key: str, *, who: str, why: str = "",
                  entity: str | None = None, sources: list[str] | tuple[str, ...] = (),
                  views: list[str] | tuple[str, ...] = (), redis_client: Any = None,
                  ) -> dict[str, Any]:
    """Erase entity ``key`` (``features.forget.parse_key``) and audit it as ``who``; returns
    the report as a dict (``online_keys``, ``offline_rows``, ``logged_rows``, ``not_erased``).
    ``redis_client`` None: the online hash is left (and the report says so)."""
    from serving.experiments.forget import forget_logged, scorer_key
    from serving.experiments.report import dataset_dirs

    p: ForgetPlan = plan(repo, parse_key(key), entity, sources, views)
    report = forget(p, EventLog(settings.offline_location), redis_client)
    logs = zip(("predictions", "outcomes"), dataset_dirs(settings.offline_location), strict=True)
    logged = {name: forget_logged(d, scorer_key(p.values)) for name, d in logs}
    out = {**report.to_dict(), "logged_rows": logged}
    out["not_erased"] = [*out["not_erased"], "prediction and outcome records still in their "
                         "Kafka topics until retention expires"]
    del out["key"]  # the caller knows it; nothing downstream needs to keep it
    what = (f"forgot {p.entity.name} sha256:{key_digest(p.values)[:16]}: {report.online_keys} "
            f"online key(s), {report.rows} event row(s) in {len(report.offline)} source(s), "
            f"{sum(logged.values())} logged prediction/outcome row(s)"
            + ("" if report.complete else " (incomplete: " + "; ".join(report.not_erased) + ")"))
    audit.record(settings.models_location, "forget", who=who, what=what, why=why,
                 entity=p.entity.name, key_sha256=key_digest(p.values),
                 online_keys=report.online_keys, offline_rows=report.rows,
                 logged_rows=sum(logged.values()), sources=sorted(report.offline),
                 complete=report.complete)
    return out
