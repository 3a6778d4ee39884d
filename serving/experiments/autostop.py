"""Statistical guardrails: act on the experiment report without waiting for a person.

``enforce`` reads one report (``report.build_report``) and the current spec and:

- **stops a live A/B arm** whose anytime-valid test says "worse", or whose error rate or p99
  latency over the logged requests breaks the spec's guardrails (the router's own guardrail
  catches errors and latency online within ``window`` requests; this one also sees arms served
  by other processes, and the statistics);
- **retires a shadow** whose test says "worse" or whose error rate breaks the guardrail (a
  shadow's latency is off the request path, so p99 does not stop it);
- **rolls back a newly promoted champion**: ``promote`` keeps the previous champion as a shadow
  (on probation), so the new champion is compared paired with it on the same requests; if that
  shadow is "better", the new champion is worse than the one it replaced and is rolled back
  (``promote.rollback``: spec revision + ``champion`` alias). If the shadow is "worse", the new
  champion has proven itself and the previous one leaves the shadows.

The decisions are anytime-valid, so running ``enforce`` after every batch of labels does not
inflate its error rate. Every action is a spec revision with an audit record (who ``WHO``, why
the sentence of the test) and an event handed to ``notify`` (the monitor's ``Alerter.action``:
log line, metric, webhook).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from serving.experiments.errors import ExperimentError
from serving.experiments.promote import SetAlias, rollback
from serving.experiments.spec import DeploymentSpec, DeploymentStore

WHO = "statistical-guardrail"

Notify = Callable[[dict], object]


def previous_champion(store: DeploymentStore, name: str) -> str | None:
    """The champion that served before the current one (None if there was none)."""
    history = store.history(name)
    if not history:
        return None
    current = history[-1].champion
    return next((s.champion for s in reversed(history) if s.champion != current), None)


def registry_set_alias(registry, who: str, why: str = "automatic rollback") -> SetAlias:
    """``SetAlias`` for a registry's ``champion`` alias as an automatic rollback moves it:
    without the review gates where the registry has them (the restored version was champion
    before)."""
    import inspect

    gate = "gate" in inspect.signature(registry.set_alias).parameters

    def set_alias(name: str, alias: str, version: str) -> object:
        extra = {"gate": False} if gate else {}
        return registry.set_alias(name, alias, version, who=who, why=why, **extra)

    return set_alias


def _breach(m: dict, spec: DeploymentSpec, latency: bool) -> str | None:
    g = spec.guardrails
    if (m.get("predictions") or 0) < g.min_requests:
        return None
    err = m.get("error_rate")
    if err is not None and err > g.max_error_rate:
        return (
            f"error rate {err:.1%} over {m['predictions']} requests exceeds {g.max_error_rate:.1%}"
        )
    p99 = m.get("p99_ms")
    if latency and p99 is not None and p99 > g.max_p99_ms:
        n = m["predictions"]
        return f"p99 latency {p99:.1f} ms over {n} requests exceeds {g.max_p99_ms:.1f} ms"
    return None


def _seq(m: dict) -> dict:
    return (m.get("vs_champion") or {}).get("sequential") or {}


def enforce(
    store: DeploymentStore,
    report: dict,
    set_alias: SetAlias | None = None,
    notify: Notify | None = None,
    who: str = WHO,
    only_probation: bool = False,
) -> list[dict]:
    """Apply the guardrails to ``report``'s model; returns the actions taken (maybe none).

    ``only_probation`` judges only the previous champion's probation shadow (what a retrain run
    that promoted does on its later calls), leaving arms and other shadows alone."""
    name = report["model"]
    spec = store.current(name)
    if report.get("revision") != spec.revision and report["champion"]["version"] != spec.champion:
        return []  # the report is of an older deployment: act on a fresh one
    actions: list[dict] = []

    def act(kind: str, why: str, new: DeploymentSpec | None, **extra) -> None:
        nonlocal spec
        if new is not None:
            spec = store.save(new, why=why, who=who)
        event = {
            "event": "tessera.experiment.action",
            "action": kind,
            "model": name,
            "why": why,
            "revision": spec.revision,
            **extra,
        }
        actions.append(event)
        if notify is not None:
            notify(event)

    live = {a.name for a in spec.live_arms} if not only_probation else set()
    for a in report.get("arms", []):
        if a["name"] not in live:
            continue
        seq = _seq(a)
        why = _breach(a, spec, latency=True)
        if why is None and seq.get("decision") == "worse":
            why = f"sequential test: {seq['sentence']}"
        if why is not None:
            arms = tuple(replace(x, stopped=why) if x.name == a["name"] else x for x in spec.arms)
            act(
                "arm_stopped",
                f"stopped {a['name']}: {why}",
                replace(spec, arms=arms),
                arm=a["name"],
                version=a["version"],
            )

    previous = previous_champion(store, name)
    for s in report.get("shadows", []):
        version = s["version"]
        if version not in spec.shadows:
            continue
        seq = _seq(s)
        decision = seq.get("decision")
        if version == previous and decision == "better":
            why = (
                f"the new champion v{spec.champion} is worse than v{version}, the champion it "
                f"replaced: {seq['sentence']}"
            )
            bad = spec.champion
            try:
                spec = rollback(store, name, why=why, who=who, set_alias=set_alias)
            except ExperimentError as e:  # history changed under us: report, do not guess
                act("rollback_failed", f"{why}; rollback failed: {e}", None, version=bad)
                return actions
            act("champion_rolled_back", why, None, version=bad, restored=spec.champion)
            return actions  # the deployment changed; the rest of the report is stale
        if version == previous and decision == "worse":
            why = f"v{spec.champion} beats v{version}, the champion it replaced: {seq['sentence']}"
            act(
                "probation_passed",
                why,
                replace(spec, shadows=tuple(x for x in spec.shadows if x != version)),
                version=version,
            )
            continue
        if only_probation:
            continue
        why = _breach(s, spec, latency=False)
        if why is None and decision == "worse" and version != previous:
            why = f"sequential test: {seq['sentence']}"
        if why is not None:
            act(
                "shadow_retired",
                f"retired shadow v{version}: {why}",
                replace(spec, shadows=tuple(x for x in spec.shadows if x != version)),
                version=version,
            )
    return actions
