"""Where things live: one home folder plus the broker and Redis addresses.

Resolved once at start-up from the environment: ``TESSERA_HOME`` (default ``./.tessera``),
``KAFKA_BOOTSTRAP`` and ``REDIS_URL``. When the addresses are unset, the ones recorded by
``tessera up`` in ``$TESSERA_HOME/services.json`` are used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from features.errors import TesseraError


@dataclass(frozen=True)
class Settings:
    home: Path
    kafka_bootstrap: str | None = None
    redis_url: str | None = None

    @classmethod
    def from_env(cls, home: str | Path | None = None) -> Settings:
        root = Path(home or os.environ.get("TESSERA_HOME", ".tessera")).resolve()
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP") or None
        redis_url = os.environ.get("REDIS_URL") or None
        state = root / "services.json"
        if (bootstrap is None or redis_url is None) and state.exists():
            recorded = json.loads(state.read_text())
            bootstrap = bootstrap or recorded.get("bootstrap")
            redis_url = redis_url or recorded.get("redis_url")
        return cls(root, bootstrap, redis_url)

    @property
    def registry_dir(self) -> Path:
        return self.home / "registry"

    @property
    def offline_dir(self) -> Path:
        return self.home / "offline"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap:
            raise TesseraError(
                "no Kafka broker configured: set KAFKA_BOOTSTRAP=host:port or run `tessera up`"
            )
        return self.kafka_bootstrap

    def require_redis(self) -> str:
        if not self.redis_url:
            raise TesseraError(
                "no Redis configured: set REDIS_URL=redis://host:port/0 or run `tessera up`"
            )
        return self.redis_url
