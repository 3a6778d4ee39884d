"""Promote a challenger to champion, or roll back to the previous champion.

Both write a new spec revision (so routers hot-reload it) with an audit record, and then move the
registry's ``champion`` alias through ``set_alias`` (the registry's alias API, passed in by the
caller so this module does not depend on how the registry stores aliases).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from serving.experiments.errors import ExperimentError
from serving.experiments.spec import CHAMPION, DeploymentSpec, DeploymentStore, _who

SetAlias = Callable[[str, str, str], object]  # (model name, alias, version)


def _switch(
    store: DeploymentStore,
    new: DeploymentSpec,
    why: str,
    who: str | None,
    set_alias: SetAlias | None,
) -> DeploymentSpec:
    check = getattr(set_alias, "check", None)  # the registry's review gates (GatedAliasSetter)
    if check is not None:
        check(new.name, new.champion)  # refuses before any revision is written
    saved = store.save(new, why=why, who=who)
    if set_alias is not None:
        set_alias(new.name, CHAMPION, new.champion)
        store.audit(
            new.name,
            {"who": who or _who(), "why": why, "alias": CHAMPION, "version": new.champion},
        )
    return saved


def promote(
    store: DeploymentStore,
    name: str,
    source: str,
    why: str = "",
    who: str | None = None,
    set_alias: SetAlias | None = None,
    keep_previous: bool = True,
) -> DeploymentSpec:
    """Make arm ``source`` (by name) or shadow ``source`` (by version) the champion.

    With ``keep_previous`` the champion it replaces stays on as a shadow (on probation), so the
    new champion is compared with it on the same requests; ``autostop.enforce`` rolls the
    promotion back if the anytime-valid test finds the new champion worse, and drops the old one
    from the shadows once the new one is found better."""
    spec = store.current(name)
    arms = [a for a in spec.arms if a.name == source]
    if arms:
        version = arms[0].version
    elif source in spec.shadows:
        version = source
    else:
        arm_names = [a.name for a in spec.arms] or "none"
        raise ExperimentError(
            f"{name} has no arm named {source!r} and no shadow version {source!r}; "
            f"arms: {arm_names}, shadows: {list(spec.shadows) or 'none'}"
        )
    if version == spec.champion:
        raise ExperimentError(f"{name}: version {version} is already the champion")
    new = replace(
        spec,
        champion=version,
        arms=tuple(a for a in spec.arms if a.version != version),
        shadows=tuple(s for s in spec.shadows if s != version)
        + ((spec.champion,) if keep_previous and spec.champion not in spec.shadows else ()),
    )
    reason = why or f"promote {source} (v{version}) over v{spec.champion}"
    return _switch(store, new, reason, who, set_alias)


def rollback(
    store: DeploymentStore,
    name: str,
    why: str = "",
    who: str | None = None,
    set_alias: SetAlias | None = None,
) -> DeploymentSpec:
    """Restore the champion that served before the current one; drop arms/shadows of the
    rolled-back version so it serves nobody."""
    history = store.history(name)
    if not history:
        store.current(name)  # raises the "no deployment yet" error
    current = history[-1]
    previous = next(
        (s.champion for s in reversed(history[:-1]) if s.champion != current.champion), None
    )
    if previous is None:
        raise ExperimentError(
            f"{name}: v{current.champion} has been the only champion; nothing to roll back to "
            f"(use `tessera deploy {name} --champion V`)"
        )
    bad = current.champion
    new = replace(
        current,
        champion=previous,
        arms=tuple(a for a in current.arms if a.version not in (bad, previous)),
        shadows=tuple(s for s in current.shadows if s not in (bad, previous)),
    )
    return _switch(store, new, why or f"rollback v{bad} to v{previous}", who, set_alias)
