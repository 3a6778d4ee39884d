"""Model registry: immutable numbered versions, movable aliases, an append-only audit log.

Layout under the storage root (one folder per model name)::

    {name}/versions/{n}/model.txt      LightGBM text format (never pickles)
    {name}/versions/{n}/metadata.json  features, training set, params, metrics, references,
                                       register-time gate results
    {name}/versions/{n}/holdout.parquet  holdout labels, scores, features, segment columns
    {name}/versions/{n}/gates.jsonl    one line per gate evaluation at promotion
    {name}/aliases.json                {"champion": "3", "challenger": "4"}
    {name}/audit.jsonl                 one line per alias change: who (``serving.auth.actor``),
                                       when, why, before, after
                                       (and, for champion moves, the gates and any override)
    {name}/gate_policy.json            review gate limits (else gate_policy.json at the root)

A version is written once (model first, metadata last: a version without metadata is not
listed) and never modified. Aliases are what the scorer follows, so moving ``champion`` is a
deploy and the audit log is the deploy history.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from features.errors import RegistryError
from serving.auth import actor, audit
from serving.registry import gates
from serving.registry.storage import ModelStorage

CHAMPION = "champion"


@dataclass(frozen=True)
class ModelVersion:
    """One registered version: its LightGBM text and its metadata."""

    name: str
    version: str
    model_text: str
    metadata: dict[str, Any]

    @property
    def features(self) -> list[str]:
        return list(self.metadata["features"])

    def booster(self):
        import lightgbm as lgb

        return lgb.Booster(model_str=self.model_text)


def _who() -> str:
    """Who acts when the caller names nobody: this process's OS account (``os:alice``); HTTP
    routes always pass the request's principal (``serving.auth.actor``)."""
    return actor.local()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def check_model_name(name: str) -> None:
    """A model name is a folder name in the registry: ASCII letters, digits, '_', '-', '.'
    (at most 128, not only dots), checked on every read too, so a request can never reach the
    filesystem with a path of its own (or one too long for it)."""
    if not _NAME.fullmatch(name) or not name.strip("."):
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise RegistryError(f"model name {shown!r} must be 1-128 ASCII letters, digits, '_', "
                            "'-' or '.'")


_check_name = check_model_name


class ModelRegistry:
    """Register, look up and alias model versions in one storage root."""

    def __init__(self, root: str | Path) -> None:
        self.storage = ModelStorage(root)

    # -- versions ---------------------------------------------------------------------------
    def models(self) -> list[str]:
        return [n for n in self.storage.list_dir("") if self.versions(n)]

    def versions(self, name: str) -> list[str]:
        """Complete versions of ``name``, oldest first."""
        check_model_name(name)
        out = []
        for v in self.storage.list_dir(f"{name}/versions"):
            if v.isdigit() and self.storage.exists(f"{name}/versions/{v}/metadata.json"):
                out.append(v)
        return sorted(out, key=int)

    def register(
        self, name: str, model_text: str, metadata: dict[str, Any],
        holdout: pa.Table | None = None,
    ) -> ModelVersion:
        """Store a new version (the next number) and return it. Existing versions never change.
        ``holdout`` (``TrainResult.holdout``) is kept for the gates and the model card."""
        _check_name(name)
        taken = [int(v) for v in self.storage.list_dir(f"{name}/versions") if v.isdigit()]
        version = str(max(taken, default=0) + 1)
        base = f"{name}/versions/{version}"
        if not self.storage.create(f"{base}/claim"):  # one writer per number, even on S3
            raise RegistryError(f"{name} version {version} was registered concurrently; retry")
        meta = {**metadata, "name": name, "version": version}
        meta.setdefault("created", _now())
        meta.setdefault("created_by", _who())
        self.storage.write_bytes(f"{base}/model.txt", model_text.encode())
        if holdout is not None:
            self.storage.write_bytes(f"{base}/holdout.parquet", gates.table_to_bytes(holdout))
        self.storage.write_bytes(
            f"{base}/metadata.json", json.dumps(meta, indent=2, sort_keys=True).encode()
        )
        return ModelVersion(name, version, model_text, meta)

    def metadata(self, name: str, ref: str = CHAMPION) -> dict[str, Any]:
        version = self.resolve(name, ref)
        return json.loads(self.storage.read_bytes(f"{name}/versions/{version}/metadata.json"))

    def get(self, name: str, ref: str = CHAMPION) -> ModelVersion:
        """A version by number or alias (default: the champion)."""
        version = self.resolve(name, ref)
        base = f"{name}/versions/{version}"
        text = self.storage.read_bytes(f"{base}/model.txt").decode()
        meta = json.loads(self.storage.read_bytes(f"{base}/metadata.json"))
        return ModelVersion(name, version, text, meta)

    def holdout(self, name: str, ref: str = CHAMPION) -> pa.Table | None:
        """The holdout rows stored with a version (None for versions registered without)."""
        rel = f"{name}/versions/{self.resolve(name, ref)}/holdout.parquet"
        return gates.table_from_bytes(self.storage.read_bytes(rel)) if self.storage.exists(
            rel) else None

    def gate_history(self, name: str, ref: str = CHAMPION) -> list[dict[str, Any]]:
        """Gate results of a version: at register (from its metadata), then each promotion."""
        version = self.resolve(name, ref)
        meta = self.metadata(name, version)
        out = [meta["gates"]] if meta.get("gates") else []
        rel = f"{name}/versions/{version}/gates.jsonl"
        if self.storage.exists(rel):
            text = self.storage.read_bytes(rel).decode()
            out += [json.loads(line) for line in text.splitlines() if line.strip()]
        return out

    def gate_policy(self, name: str | None) -> gates.GatePolicy:
        """The policy of ``name`` (else the root's, else the default); None: the root's."""
        return gates.load_policy(self.storage, name)

    def set_gate_policy(self, name: str | None, policy: gates.GatePolicy) -> None:
        """Write the policy of ``name`` (or, for None, the default of every model)."""
        rel = f"{name}/{gates.POLICY_FILE}" if name else gates.POLICY_FILE
        self.storage.write_bytes(rel, json.dumps(policy.to_dict(), indent=2).encode())

    def check_gates(
        self, name: str, version: str, override: bool = False, why: str = "",
        record: bool = False,
    ) -> dict[str, Any]:
        """Evaluate the gate policy for making ``version`` the champion, against the current
        champion on the candidate's holdout rows. Raises ``GateFailed`` when a check fails,
        unless ``override`` (which needs a ``why``)."""
        version = self.resolve(name, version)
        current = self.aliases(name).get(CHAMPION)
        champion = self.get(name, current) if current and current != version else None
        report = gates.evaluate(
            self.gate_policy(name), self.metadata(name, version).get("metrics") or {},
            self.holdout(name, version), champion, stage="promote",
        )
        if not report["passed"]:
            if not override:
                gates.refuse(name, version, report)
            if not why.strip():
                raise RegistryError(
                    f"{name} v{version}: --override needs --why '...': the reason is audited"
                )
            report["override"] = True
        if record:
            self.storage.append_line(f"{name}/versions/{version}/gates.jsonl",
                                     json.dumps(report, sort_keys=True))
        return report

    def resolve(self, name: str, ref: str = CHAMPION) -> str:
        """Version number of ``ref`` (a number, an alias, or 'latest')."""
        versions = self.versions(name)
        if not versions:
            raise RegistryError(
                f"no model named {name!r} in {self.storage.uri}; register one with "
                f"`tessera train --model {name} ...` (known: {', '.join(self.models()) or 'none'})"
            )
        if ref == "latest":
            return versions[-1]
        if ref.isdigit():
            if ref not in versions:
                raise RegistryError(
                    f"{name} has no version {ref}; versions: {', '.join(versions)}"
                )
            return ref
        aliases = self.aliases(name)
        if ref not in aliases:
            hint = (
                f"`tessera models alias {name} {ref} VERSION --why ...`"
                if ref == CHAMPION
                else "one of: " + (", ".join(aliases) or "none")
            )
            raise RegistryError(f"{name} has no alias {ref!r}; set it with {hint}")
        return aliases[ref]

    # -- aliases ----------------------------------------------------------------------------
    def aliases(self, name: str) -> dict[str, str]:
        if not self.storage.exists(f"{name}/aliases.json"):
            return {}
        return json.loads(self.storage.read_bytes(f"{name}/aliases.json"))

    def set_alias(
        self, name: str, alias: str, version: str | None, who: str | None = None, why: str = "",
        override: bool = False, gate: bool = True,
    ) -> dict[str, Any]:
        """Point ``alias`` at ``version`` (None removes it) and append the change to the audit.

        Moving ``champion`` to another version passes the review gates first (``check_gates``;
        ``GateFailed`` unless ``override`` with a ``why``); ``gate=False`` (a rollback to the
        previous champion) skips them, and the audit record says so."""
        if not alias or alias.isdigit() or alias == "latest":
            raise RegistryError(f"alias {alias!r} must be a word (not a number or 'latest')")
        if version is not None:
            version = self.resolve(name, str(version))
        aliases = self.aliases(name)
        before = aliases.get(alias)
        extra: dict[str, Any] = {}
        if alias == CHAMPION and version is not None and version != before:
            if gate:
                report = self.check_gates(name, version, override, why, record=True)
                extra = {"gates": {"passed": report["passed"], "failed": report["failed"]}}
                if report.get("override"):
                    extra["override"] = True
            else:
                extra = {"gates": "skipped"}
        def move(current: dict[str, str]) -> dict[str, str]:  # other aliases' moves are kept
            if current.get(alias) != before:
                raise RegistryError(f"{name}: alias {alias!r} was moved to "
                                    f"{current.get(alias)} concurrently; retry")
            if version is None:
                current.pop(alias, None)
            else:
                current[alias] = version
            return current

        self.storage.update_json(f"{name}/aliases.json", move)
        entry = {
            "when": audit.now(),
            "who": who or _who(),
            "why": why,
            "model": name,
            "alias": alias,
            "before": before,
            "after": version,
            **extra,
        }
        self.storage.append_line(f"{name}/audit.jsonl", json.dumps(entry, sort_keys=True))
        return entry

    def audit(self, name: str) -> list[dict[str, Any]]:
        if not self.storage.exists(f"{name}/audit.jsonl"):
            return []
        text = self.storage.read_bytes(f"{name}/audit.jsonl").decode()
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def aliases_stamp(self, name: str) -> int | None:
        """Cheap change detector for hot reload (mtime of the alias file)."""
        return self.storage.mtime_ns(f"{name}/aliases.json")


def set_alias(
    root: str | Path, name: str, alias: str, version: str, who: str | None = None, why: str = "",
    override: bool = False,
) -> dict[str, Any]:
    """Move an alias in the registry at ``root`` (gated like ``ModelRegistry.set_alias``)."""
    return ModelRegistry(root).set_alias(name, alias, version, who=who, why=why,
                                         override=override)
