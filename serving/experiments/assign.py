"""Sticky A/B assignment: the same entity always lands in the same arm for one salt.

``bucket = blake2b(salt, entity key) / 2**64`` is uniform on [0, 1); arms take consecutive
slices of that interval in the order they were declared and the champion takes the rest. A
stopped arm's slice falls back to the champion, so stopping one arm moves nobody else.
"""

from __future__ import annotations

import hashlib

from serving.experiments.spec import CHAMPION, DeploymentSpec


def bucket(entity_key: str, salt: str) -> float:
    """Deterministic uniform number in [0, 1) for an entity under an experiment salt."""
    digest = hashlib.blake2b(entity_key.encode(), digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign(spec: DeploymentSpec, entity_key: str) -> tuple[str, str]:
    """(arm name, model version) serving this entity; the champion is arm ``"champion"``."""
    if spec.arms:
        u = bucket(entity_key, spec.salt)
        edge = 0.0
        for arm in spec.arms:
            edge += arm.weight
            if u < edge:
                if arm.stopped is None:
                    return arm.name, arm.version
                break
    return CHAMPION, spec.champion


def entity_key_of(keys: dict[str, object]) -> str:
    """An entity's key values joined by ``|`` in the entity's key order: the unit of assignment,
    written exactly as the scorer passes it to the router (and as outcomes must name it)."""
    return "|".join(str(v) for v in keys.values())
