"""Retrain a model, run the new version as a shadow, promote it only when the numbers say so.

One run is named by what it is made of: the champion it replaces, the training set's
fingerprint (or its bytes' digest), the label and the seed. Running the same command again
resumes that run instead of starting another, and every step first checks whether it already
happened:

A training set (by fingerprint, label and seed) is trained at most once, even after the
champion it was meant to replace has changed: a later call returns that run.

1. **register**: train with the champion's features and params, register with lineage
   (``parent``, ``training_set: {path, fingerprint}``, ``retrain_run``). A registered version
   is found again by its ``retrain_run``, so a crash after registering never registers twice;
   the registry writes metadata last, so a crash while registering leaves no listed version.
2. **shadow**: add the version to the deployment spec's shadows (skipped if already there).
3. **decide** (every later call, until decided): read the experiment report's *anytime-valid*
   decision (the confidence sequence of the per-request logloss difference, see
   ``serving.experiments.sequential``), which stays valid however often the run is resumed:
   "better" at the configured confidence promotes it (spec revision + ``champion`` alias);
   "worse" retires the shadow; "keep collecting" waits, with the labels so far. A
   fixed-horizon p-value would not do here: every resumed call is another look. Promotion is
   repaired if a crash left the spec and the alias disagreeing, so there is never more than one
   champion.

Each decision lands in the deployment audit log with its reason. After the promotion the
replaced champion stays as a shadow (on probation); later calls judge that pair with the same
anytime-valid test and roll the promotion back (step ``rolled_back``) if the old champion is
better, or end the probation if it is worse. The state of a run is a small
JSON file ``<models>/<name>/retrain/<run>.json`` (``<models>``: ``Settings.models_location``, a
folder or a bucket URI) written whole after each step through the registry's storage (renamed
into place on a disk, one PUT in a bucket), so runs resume from any machine that sees the
registry.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.monitoring.errors import MonitorError

if TYPE_CHECKING:
    import polars as pl

WHO = "tessera-retrain"


@dataclass(frozen=True)
class RetrainPlan:
    name: str
    training_set: Path
    label: str
    timestamp: str = "ts"
    seed: int = 0
    alpha: float = 0.05  # the experiment report's level: "better" means at 1 - alpha confidence


def fresh_training_set(
    spine: Path | str | pl.DataFrame,
    features: list[str],
    out_dir: Path | str,
    days: float,
    timestamp: str = "ts",
    **build: Any,
) -> Path:
    """Point-in-time training set over the spine's newest ``days`` (a moving time range).

    The spine (a Parquet path or a polars frame) holds entity keys, the timestamp and the label
    (e.g. ``serving.monitoring.spine.outcome_spine``: the joined outcome log). Rows older
    than ``days`` before the newest one are dropped, every feature is built from the offline
    store as of each row's time, and the file is named by its fingerprint, so the same spine
    and store give the same file (and the same retrain run). ``build`` goes to
    ``features.offline.training_set.build_training_set`` (``repo``, ``settings``, ...).
    """
    import polars as pl

    from features.offline.training_set import build_training_set, write_training_set

    df = spine if isinstance(spine, pl.DataFrame) else pl.read_parquet(spine)
    if timestamp not in df.columns:
        raise MonitorError(f"the spine has no {timestamp!r} column; pass --timestamp")
    col = pl.col(timestamp)
    if isinstance(df.schema[timestamp], pl.Datetime | pl.Date):
        df = df.filter(col > col.max() - pl.duration(microseconds=int(days * 86_400e6)))
    else:  # int microseconds since the epoch
        df = df.filter(col > col.max() - int(days * 86_400e6))
    built = build_training_set(df, features, timestamp_column=timestamp, **build)
    path = Path(out_dir) / f"training-{built.fingerprint[:16]}.parquet"
    if not path.exists():
        write_training_set(built.frame, path, built.fingerprint)
    return path


def training_set_dir(settings: Any, name: str) -> Path:
    """Where retrain writes the training sets it builds. LightGBM trains from a local Parquet
    file, so this is a local folder: next to the run states (``<models>/<name>/retrain``) when
    the models are on a disk, as always; ``<home>/retrain/<name>`` when they are in a bucket
    (a working copy: the file is named by its fingerprint, which the run's state records)."""
    from serving.registry.registry import check_model_name
    from serving.registry.storage import ModelStorage

    check_model_name(name)
    storage = ModelStorage(settings.models_location)
    if storage.local:
        return Path(storage.root) / name / "retrain"
    return Path(settings.home) / "retrain" / name


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_id(plan: RetrainPlan, champion: str, fingerprint: str) -> str:
    key = f"{plan.name}|{champion}|{fingerprint}|{plan.label}|{plan.seed}"
    return hashlib.blake2b(key.encode(), digest_size=6).hexdigest()


class Retrainer:
    """Drives runs against one registry, deployment store and prediction log."""

    def __init__(self, registry: Any, store: Any, offline_dir: Path | str, models_dir: Path | str,
                 who: str = WHO):
        from serving.registry.storage import ModelStorage

        self.who = who  # on every audit record: who runs the loop (serving.auth.actor)
        self.registry = registry
        self.store = store
        self.offline_dir = offline_dir  # a folder or a URI (Settings.offline_location)
        self.models_dir = models_dir  # a folder or a URI (Settings.models_location)
        self.storage = ModelStorage(models_dir)

    # -- state ----------------------------------------------------------------------------------
    @staticmethod
    def _folder(name: str) -> str:
        from serving.registry.registry import check_model_name

        check_model_name(name)
        return f"{name}/retrain"

    def _state_rel(self, name: str, run: str) -> str:
        return f"{self._folder(name)}/{run}.json"

    def _load(self, name: str, run: str) -> dict | None:
        rel = self._state_rel(name, run)
        return json.loads(self.storage.read_bytes(rel)) if self.storage.exists(rel) else None

    def _save(self, state: dict) -> dict:
        state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.storage.write_bytes(self._state_rel(state["name"], state["run"]),
                                 json.dumps(state, indent=2, sort_keys=True).encode())
        return state

    def runs(self, name: str) -> list[dict]:
        folder = self._folder(name)
        states = [json.loads(self.storage.read_bytes(f"{folder}/{n}"))
                  for n in self.storage.list_dir(folder)
                  if n.endswith(".json") and not n.startswith(".")]
        return sorted(states, key=lambda s: s.get("started", ""))

    # -- steps ----------------------------------------------------------------------------------
    def start(self, plan: RetrainPlan) -> dict:
        """Steps 1 and 2 (each skipped if done), then one ``decide``. Safe to call again."""
        from features.offline.training_set import read_fingerprint

        champ = self.registry.get(plan.name, "champion")
        fp = read_fingerprint(plan.training_set) or f"blake2b:{_digest(plan.training_set)}"
        run = run_id(plan, champ.version, fp)
        saved = self._load(plan.name, run)
        if saved is None:  # the same data under an earlier champion: never train it twice
            for old in self.runs(plan.name):
                same = (old["plan"].get("label"), old["plan"].get("seed")) == (
                    plan.label,
                    str(plan.seed),
                )
                if old["fingerprint"] == fp and same:
                    return self.decide(plan.name, old["run"], alpha=plan.alpha)
        state = (
            saved
            if saved is not None
            else {
                "name": plan.name,
                "run": run,
                "parent": champ.version,
                "fingerprint": fp,
                "plan": {k: str(v) for k, v in asdict(plan).items()},
                "step": "started",
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )
        if state.get("version") is None:
            state["version"] = self._register(plan, champ, fp, run)
            state["step"] = "registered"
            self._save(state)
        if state["step"] == "registered":
            self._shadow(plan.name, state["version"], run)
            state["step"] = "shadow"
            self._save(state)
        return self.decide(plan.name, run, alpha=plan.alpha)

    def _register(self, plan: RetrainPlan, champ: Any, fp: str, run: str) -> str:
        for v in reversed(self.registry.versions(plan.name)):  # registered before a crash?
            if self.registry.metadata(plan.name, v).get("retrain_run") == run:
                return v
        from serving.registry.training import train

        params = dict(champ.metadata.get("params") or {})
        result = train(
            plan.training_set,
            plan.label,
            features=champ.features,
            timestamp=plan.timestamp,
            params=params,
            seed=plan.seed,
        )
        result.extra.update(  # training_set as `tessera train` records it
            parent=champ.version,
            training_set={"path": str(Path(plan.training_set).resolve()), "fingerprint": fp},
            retrain_run=run,
        )
        return self.registry.register(  # holdout rows: the gates compare it with the champion
            plan.name, result.model_text, result.metadata(), holdout=result.holdout
        ).version

    def _spec(self, name: str):
        from serving.experiments.errors import ExperimentError
        from serving.experiments.spec import DeploymentSpec

        try:
            return self.store.current(name)
        except ExperimentError:
            champion = self.registry.resolve(name, "champion")
            return self.store.save(DeploymentSpec(name, champion), why="first spec", who=self.who)

    def _shadow(self, name: str, version: str, run: str) -> None:
        spec = self._spec(name)
        if version in spec.shadows or version == spec.champion:
            return
        self.store.save(
            replace(spec, shadows=(*spec.shadows, version)),
            why=f"retrain {run}: run v{version} as a shadow of v{spec.champion}",
            who=self.who,
        )

    def decide(self, name: str, run: str, alpha: float = 0.05, reps: int = 200) -> dict:
        """Promote, retire or keep waiting, from the current experiment report."""
        from serving.experiments.promote import promote
        from serving.experiments.report import experiment_report
        from serving.registry.gates import GatedAliasSetter

        state = self._load(name, run)
        if state is None:
            raise MonitorError(
                f"no retrain run {run!r} for {name}; start one with `tessera "
                "retrain NAME --training-set PATH --label COL`"
            )
        version = state["version"]
        spec = self._spec(name)
        if state["step"] == "rolled_back":
            return state
        if spec.champion == version or state["step"] == "promoted":
            self._align_alias(name, spec.champion, run)
            if spec.champion != version:  # rolled back since (by the guard or a person)
                state.update(step="rolled_back", reason=f"v{spec.champion} is champion again")
                return self._save(state)
            state.update(step="promoted", reason=state.get("reason") or "already champion")
            if state.get("parent") in spec.shadows:
                self._probation(name, run, state, alpha, reps)
            return self._save(state)
        if state["step"] == "retired":
            return state
        report = experiment_report(self.models_dir, self.offline_dir, name, alpha=alpha, reps=reps)
        mine = next((s for s in report["shadows"] if s["version"] == version), None)
        if mine is None:
            state.update(step="shadow", reason="no predictions from the shadow yet")
            return self._save(state)
        verdict = _sequential_verdict(mine["vs_champion"])
        state["verdict"] = verdict
        if verdict["word"] == "better":
            why = f"retrain {run}: v{version} beats v{spec.champion}: {verdict['sentence']}"
            promote(
                self.store,
                name,
                version,
                why=why,
                who=self.who,
                # the registry's review gates refuse a failing champion before any revision
                set_alias=GatedAliasSetter(self.registry, why, who=self.who),
            )
            state.update(step="promoted", reason=verdict["sentence"])
        elif verdict["word"] == "worse":
            why = f"retrain {run}: v{version} left out: {verdict['sentence']}"
            self.store.save(
                replace(spec, shadows=tuple(s for s in spec.shadows if s != version)),
                why=why,
                who=self.who,
            )
            state.update(step="retired", reason=verdict["sentence"])
        else:
            if state.get("reason") != verdict["sentence"]:
                self.store.audit(
                    name,
                    {
                        "who": self.who,
                        "why": f"retrain {run}: v{version} kept as a shadow: {verdict['sentence']}",
                    },
                )
            state.update(step="shadow", reason=verdict["sentence"])
        return self._save(state)

    def _probation(self, name: str, run: str, state: dict, alpha: float, reps: int) -> None:
        """The replaced champion still shadows the promoted version (``promote`` keeps it on
        probation): roll the promotion back if it is found better, end the probation if worse
        (``autostop.enforce`` on the report, for this pair only)."""
        from serving.experiments.autostop import enforce, registry_set_alias
        from serving.experiments.report import experiment_report

        report = experiment_report(self.models_dir, self.offline_dir, name, alpha=alpha, reps=0)
        set_alias = registry_set_alias(self.registry, self.who, why=f"retrain {run}: rollback")
        for a in enforce(self.store, report, set_alias, who=self.who, only_probation=True):
            if a["action"] == "champion_rolled_back":
                state.update(step="rolled_back", reason=a["why"])
            elif a["action"] == "probation_passed":
                state["probation"] = a["why"]

    def _align_alias(self, name: str, champion: str, run: str) -> None:
        """A crash between the spec revision and the alias move leaves them apart: rejoin."""
        if self.registry.aliases(name).get("champion") != champion:
            self.registry.set_alias(
                name,
                "champion",
                champion,
                who=self.who,
                why=f"retrain {run}: align alias with the deployment spec",
            )


def _sequential_verdict(vs: dict) -> dict:
    """The report's anytime-valid decision as the run's verdict (the fixed-horizon one beside)."""
    seq = vs.get("sequential") or {}
    fixed = vs.get("verdict") or {}
    return {
        "word": seq.get("decision", "keep collecting"),
        "sentence": seq.get("sentence", "no sequential test in the report"),
        "kind": "anytime-valid",
        "metric": seq.get("metric"),
        "labels": seq.get("labels"),
        "decided_at": seq.get("decided_at"),
        "fixed_horizon": fixed.get("sentence"),
    }
