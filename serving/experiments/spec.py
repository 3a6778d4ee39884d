"""Deployment specs: which model version is champion, which A/B arms and shadows run beside it.

One spec per model name, stored as numbered JSON files under ``<models>/<name>/deployments/``
(``<models>``: a folder or a bucket URI; ``0001.json``, ``0002.json``, ...): a change never
overwrites, so every past deployment can be read back and rolled back to. Each change also
appends a line to ``audit.jsonl`` there (who, when, why, before, after).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from serving.auth import actor, audit
from serving.experiments.errors import ExperimentError
from serving.registry.storage import ModelStorage

CHAMPION = "champion"
_REVISION = re.compile(r"[0-9]+\.json")


@dataclass(frozen=True)
class Arm:
    """An A/B arm: a model version served to ``weight`` of entities (0 < weight < 1)."""

    name: str
    version: str
    weight: float
    stopped: str | None = None  # why a guardrail (or a person) stopped it; None while live


@dataclass(frozen=True)
class Guardrails:
    """Stop an arm when, over its last ``window`` requests, errors or p99 latency breach these."""

    max_error_rate: float = 0.05
    max_p99_ms: float = 50.0
    min_requests: int = 200
    window: int = 1000


@dataclass(frozen=True)
class DeploymentSpec:
    """The whole serving plan of one model name; ``revision`` counts changes from 1."""

    name: str
    champion: str
    arms: tuple[Arm, ...] = ()
    shadows: tuple[str, ...] = ()
    salt: str = ""
    threshold: float = 0.5
    guardrails: Guardrails = field(default_factory=Guardrails)
    revision: int = 0

    def __post_init__(self) -> None:
        names = [a.name for a in self.arms]
        if CHAMPION in names:
            raise ExperimentError(f"arm name {CHAMPION!r} is reserved; name the arm differently")
        if len(set(names)) != len(names):
            raise ExperimentError(f"{self.name}: arm names must be unique, got {names}")
        for a in self.arms:
            if not 0 < a.weight < 1:
                raise ExperimentError(
                    f"{self.name}: arm {a.name!r} weight {a.weight} must be in (0, 1); the "
                    "champion serves what the arms leave"
                )
        total = sum(a.weight for a in self.arms)
        if total >= 1:
            raise ExperimentError(
                f"{self.name}: arm weights sum to {total:.3f}; keep it below 1 so the champion "
                "still serves some traffic"
            )

    @property
    def live_arms(self) -> tuple[Arm, ...]:
        return tuple(a for a in self.arms if a.stopped is None)

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise ExperimentError(
            f"{self.name} has no arm {name!r}; arms: {[a.name for a in self.arms] or 'none'}"
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["arms"] = [asdict(a) for a in self.arms]
        d["shadows"] = list(self.shadows)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DeploymentSpec:
        return cls(
            name=d["name"],
            champion=str(d["champion"]),
            arms=tuple(Arm(**a) for a in d.get("arms", ())),
            shadows=tuple(str(s) for s in d.get("shadows", ())),
            salt=d.get("salt", ""),
            threshold=float(d.get("threshold", 0.5)),
            guardrails=Guardrails(**d.get("guardrails", {})),
            revision=int(d.get("revision", 0)),
        )


def parse_arm(text: str) -> Arm:
    """``NAME=VERSION:WEIGHT`` (as on the command line) -> Arm."""
    try:
        name, rest = text.split("=", 1)
        version, weight = rest.rsplit(":", 1)
        return Arm(name.strip(), version.strip(), float(weight))
    except ValueError:
        raise ExperimentError(
            f"arm {text!r} must look like NAME=VERSION:WEIGHT, e.g. challenger=3:0.2"
        ) from None


class DeploymentStore:
    """Versioned spec files and their audit log for one models folder or URI (s3://...): the
    model registry's storage, so a revision is taken by an exclusive create (two writers never
    share one) and audit lines are appended without losing a concurrent one."""

    def __init__(self, models_dir: Path | str) -> None:
        self.storage = ModelStorage(models_dir)
        self.models_dir = Path(self.storage.root) if self.storage.local else models_dir

    def folder(self, name: str) -> Path:
        """The deployments folder on a local disk."""
        return Path(self.storage.store.path(self._rel(name)))

    @staticmethod
    def _rel(name: str) -> str:
        from serving.registry.registry import check_model_name

        check_model_name(name)
        return f"{name}/deployments"

    def deployed(self) -> list[str]:
        """Model names with at least one spec revision (listed, not globbed: works in a
        bucket too)."""
        from features.errors import RegistryError

        out = []
        for n in self.storage.list_dir(""):
            try:
                if self._files(n):
                    out.append(n)
            except RegistryError:  # not a model folder (a stray file, a temporary name)
                continue
        return out

    def _files(self, name: str) -> list[str]:
        rel = self._rel(name)
        return [f"{rel}/{n}" for n in self.storage.list_dir(rel) if _REVISION.fullmatch(n)]

    def _read(self, rel: str) -> DeploymentSpec:
        return DeploymentSpec.from_dict(json.loads(self.storage.read_bytes(rel)))

    def history(self, name: str) -> list[DeploymentSpec]:
        """Every revision, oldest first."""
        return [self._read(rel) for rel in self._files(name)]

    def current(self, name: str) -> DeploymentSpec:
        files = self._files(name)
        if not files:
            raise ExperimentError(
                f"model {name!r} has no deployment yet; run `tessera deploy {name} --champion V`"
            )
        return self._read(files[-1])

    def revision(self, name: str) -> int:
        """Latest revision number (0 when none): cheap enough to poll for hot reload."""
        files = self._files(name)
        return int(files[-1].rsplit("/", 1)[1].split(".")[0]) if files else 0

    def save(self, spec: DeploymentSpec, why: str = "", who: str | None = None) -> DeploymentSpec:
        """Write ``spec`` as the next revision and append the change to the audit log."""
        before = self.current(spec.name) if self._files(spec.name) else None
        new = replace(spec, revision=(before.revision if before else 0) + 1)
        data = json.dumps(new.to_dict(), indent=2, sort_keys=True).encode()
        if not self.storage.create(f"{self._rel(spec.name)}/{new.revision:04d}.json", data):
            raise ExperimentError(
                f"{spec.name}: revision {new.revision} was written concurrently; retry")
        self.audit(
            spec.name,
            {
                "who": who or _who(),
                "why": why,
                "before": before.to_dict() if before else None,
                "after": new.to_dict(),
            },
        )
        return new

    def audit(self, name: str, entry: dict) -> None:
        """Append one audit record (stamped with the time unless it has one)."""
        entry = {"when": audit.now(), **entry}
        self.storage.append_line(f"{self._rel(name)}/audit.jsonl",
                                 json.dumps(entry, sort_keys=True))

    def audit_log(self, name: str) -> list[dict]:
        rel = f"{self._rel(name)}/audit.jsonl"
        if not self.storage.exists(rel):
            return []
        text = self.storage.read_bytes(rel).decode()
        return [json.loads(line) for line in text.splitlines() if line]


def _who() -> str:
    """Who acts when the caller names nobody: this process's OS account (``os:alice``); HTTP
    routes always pass the request's principal (``serving.auth.actor``)."""
    return actor.local()
