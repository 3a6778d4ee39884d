"""The audit log: who changed what, when and why, across every log that records it.

Model changes are recorded beside the model (``<models>/<name>/audit.jsonl``: alias moves;
``<models>/<name>/deployments/audit.jsonl``: spec revisions). Changes that belong to no model
(tokens, materialize, backfill, forget) go to ``<models>/audit.jsonl``, written here with the
registry's storage (appends are conditional puts on S3, so none is lost). ``entries`` reads all
of them, merged by time, for ``tessera audit log`` and the dashboard.

Every record has ``when`` (UTC, ISO 8601), ``who`` (``serving.auth.actor``), ``why`` and, for
records written here, ``action`` and ``what`` (one line a person reads).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when used: the registry imports this module for ``now``
    from serving.registry.storage import ModelStorage

SYSTEM_LOG = "audit.jsonl"


def now() -> str:
    """The ``when`` of a record: UTC, to the microsecond, so records of one second merge from
    several logs in the order they were written (``2026-12-02T07:50:01.123456Z``)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _when(r: dict[str, Any]) -> tuple[str, str]:
    """Sort key of a record's ``when``, older records stamped to the second included."""
    when = str(r.get("when") or "")
    return when[:19], when[19:].rstrip("Z")


def _storage(models: str | Path | ModelStorage) -> ModelStorage:
    from serving.registry.storage import ModelStorage

    return models if isinstance(models, ModelStorage) else ModelStorage(models)


def record(models: str | Path | ModelStorage, action: str, who: str, what: str,
           why: str = "", **details: Any) -> dict[str, Any]:
    """Append one record of a change that belongs to no model; returns it. ``who`` is required:
    the caller knows who is acting (``serving.auth.actor``), this module does not guess."""
    if not who:
        raise ValueError("an audit record needs who acted (serving.auth.actor)")
    storage = _storage(models)
    entry = {"when": now(), "who": who, "action": action, "what": what, "why": why,
             **details}
    storage.append_line(SYSTEM_LOG, json.dumps(entry, sort_keys=True, default=str))
    return entry


def _lines(storage: ModelStorage, rel: str) -> list[dict[str, Any]]:
    if not storage.exists(rel):
        return []
    return [json.loads(line) for line in storage.read_bytes(rel).decode().splitlines()
            if line.strip()]


def entries(models: str | Path | ModelStorage, model: str | None = None,
            who: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Every audit record under ``models``, oldest first: each model's alias and deployment
    logs (with ``model`` set) and the system log. ``model``/``who`` filter; ``limit`` keeps the
    newest."""
    from features.errors import RegistryError
    from serving.registry.registry import check_model_name

    storage = _storage(models)
    rows: list[dict[str, Any]] = []
    if model is None:
        rows += [{"model": None, **r} for r in _lines(storage, SYSTEM_LOG)]
    for name in [model] if model else storage.list_dir(""):
        try:
            check_model_name(name)
        except RegistryError:  # not a model folder's name
            continue
        for rel in (f"{name}/audit.jsonl", f"{name}/deployments/audit.jsonl"):
            rows += [{**r, "model": name} for r in _lines(storage, rel)]
    if who is not None:
        rows = [r for r in rows if r.get("who") == who]
    rows.sort(key=_when)
    return rows[-limit:] if limit else rows


def describe(r: dict[str, Any]) -> str:
    """One line for a record: an alias move, what a spec revision changed, or its ``what``."""
    if "alias" in r:  # experiments' promote writes "version", the registry "before"/"after"
        to = r.get("version") or r.get("after")
        was = f" (was v{r['before']})" if isinstance(r.get("before"), str) else ""
        return f"alias {r['alias']} → v{to}{was}" if to else f"alias {r['alias']} removed{was}"
    after, before = r.get("after"), r.get("before")
    if isinstance(after, dict):
        parts = [f"revision {after.get('revision')}: champion v{after.get('champion')}"]
        if after.get("shadows"):
            parts.append("shadows " + ", ".join(f"v{s}" for s in after["shadows"]))
        if after.get("arms"):
            parts.append("arms " + ", ".join(f"{a['name']}=v{a['version']}" for a in after["arms"]))
        if isinstance(before, dict) and before.get("champion") != after.get("champion"):
            parts.append(f"(was v{before.get('champion')})")
        return "; ".join(parts)
    return str(r.get("what") or r.get("action") or "")
