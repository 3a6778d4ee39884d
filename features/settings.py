"""Tessera's configuration: one typed object, built once per command and passed explicitly.

Sources, later ones winning: built-in defaults; the project file ``tessera.yaml``, found from
the current directory upward as Feast finds ``feature_store.yaml`` (relative paths in it are
relative to the file); environment variables (``TESSERA_HOME``, ``KAFKA_BOOTSTRAP``,
``REDIS_URL``, ``TESSERA_REPO``, ``TESSERA_MODELS_URI``, ``TESSERA_OFFLINE_URI``,
``TESSERA_REGISTRY_URI``,
``TESSERA_PROJECT`` naming the
project file, and
``TESSERA_SERVE__<FIELD>`` for the ``serve:`` section); arguments given in code or by a command's
flags. When the broker or Redis address is still unset, the ones ``tessera up`` recorded in
``<home>/services.json`` are used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from features.errors import TesseraError

PROJECT_FILE = "tessera.yaml"
# certificate files: relative to tessera.yaml when given there
_PATH_FIELDS = ("redis_tls_ca", "redis_tls_cert", "redis_tls_key", "kafka_ssl_cafile",
                "kafka_ssl_certfile", "kafka_ssl_keyfile")


class ServeSettings(BaseModel):
    """The scorer's settings (``serve:`` in tessera.yaml; ``tessera serve`` flags override)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[str] = Field(default_factory=list,
                              description="models served: NAME or NAME@ALIAS (default champion)")
    host: str = Field("127.0.0.1", description="address to listen on (a non-loopback one "
                                               "needs a token first)")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    redis_timeout_ms: float = Field(100.0, gt=0, description="per Redis read; then a 503")
    redis_spin_us: float = Field(
        200.0, ge=0, description="busy-poll for Redis' reply before sleeping (0 when the "
                                 "workers outnumber the cores)")
    max_entities: int = Field(1000, gt=0, description="entities per request")
    max_features: int = Field(256, gt=0, description="feature refs per /v1/features request")
    max_body_bytes: int = Field(1 << 20, gt=0, description="larger request bodies are a 413")
    inline_cells: int = Field(
        512, ge=0, description="entities x features a request may have and still run on the "
                               "event loop")
    reload_s: float = Field(1.0, gt=0, description="how often aliases are re-read")
    log_vectors: bool = Field(
        False, description="log every served feature vector (per-feature drift in "
                           "`tessera monitor`); by default only their hashes are logged")
    dashboard_metrics: list[str] = Field(
        default_factory=list, description="other /metrics URLs /ui shows (e.g. the worker's)")
    dashboard_cache_s: float = Field(10.0, ge=0, description="/ui recomputes reports at most "
                                                             "this often")
    hook: str | None = Field(None, description="module:function called with each worker's "
                                               "Scorer once built (an extension point)")


class _ProjectFile(YamlConfigSettingsSource):
    """tessera.yaml, with ``home`` and ``repo`` resolved against the file's folder."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        data = super()._read_file(file_path) or {}
        if not isinstance(data, dict):
            raise TesseraError(f"{file_path} must be a mapping of settings, not {type(data)}")
        for key in ("home", "repo", *_PATH_FIELDS):
            if isinstance(data.get(key), str):
                data[key] = str((Path(file_path).parent / data[key]).resolve())
        return data


def find_project_file(start: Path | None = None) -> Path | None:
    """``$TESSERA_PROJECT``, else the nearest tessera.yaml from ``start`` (cwd) upward."""
    named = os.environ.get("TESSERA_PROJECT")
    if named:
        path = Path(named)
        if not path.is_file():
            raise TesseraError(f"TESSERA_PROJECT={named} is not a file")
        return path.resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / PROJECT_FILE
        if candidate.is_file():
            return candidate
    return None


class Settings(BaseSettings):
    """Where things live and which services to use; see the module docstring for the sources."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True, env_nested_delimiter="__",
                                      env_prefix="TESSERA_", populate_by_name=True,
                                      validate_default=True)

    home: Path = Field(Path(".tessera"), validation_alias="TESSERA_HOME",
                       description="state folder: registries, event log, models")
    kafka_bootstrap: str | None = Field(
        None, validation_alias="KAFKA_BOOTSTRAP",
        description="host:port of a Kafka broker")
    redis_url: str | None = Field(
        None, validation_alias="REDIS_URL",
        description="redis://host:port/db of the online store")
    # transports (docs/deploy.md "Transport security"): used by every client through
    # features.online.connection (Redis) and features.kafka_config (Kafka)
    redis_username: str | None = Field(
        None, validation_alias="REDIS_USERNAME", description="Redis ACL user")
    redis_password: SecretStr | None = Field(
        None, validation_alias="REDIS_PASSWORD", description="Redis ACL user's password")
    redis_tls_ca: Path | None = Field(
        None, validation_alias="REDIS_TLS_CA",
        description="CA bundle that signed Redis' certificate (needs a rediss:// URL)")
    redis_tls_cert: Path | None = Field(
        None, validation_alias="REDIS_TLS_CERT", description="client certificate (mutual TLS)")
    redis_tls_key: Path | None = Field(
        None, validation_alias="REDIS_TLS_KEY", description="client certificate's key")
    kafka_security_protocol: str = Field(
        "PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL",
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    kafka_sasl_mechanism: str | None = Field(
        None, validation_alias="KAFKA_SASL_MECHANISM",
        description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    kafka_sasl_username: str | None = Field(None, validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(None, validation_alias="KAFKA_SASL_PASSWORD")
    kafka_ssl_cafile: Path | None = Field(
        None, validation_alias="KAFKA_SSL_CAFILE", description="CA bundle of the brokers")
    kafka_ssl_certfile: Path | None = Field(
        None, validation_alias="KAFKA_SSL_CERTFILE", description="client certificate (mTLS)")
    kafka_ssl_keyfile: Path | None = Field(
        None, validation_alias="KAFKA_SSL_KEYFILE", description="client certificate's key")
    repo: Path | None = Field(
        None, validation_alias="TESSERA_REPO",
        description="feature repo module; unset: the registry `tessera apply` recorded")
    models_uri: str | None = Field(
        None, validation_alias="TESSERA_MODELS_URI",
        description="model registry: a folder or a pyarrow filesystem URI (default "
                    "<home>/models)")
    registry_uri: str | None = Field(
        None, validation_alias="TESSERA_REGISTRY_URI",
        description="feature registry (what `tessera apply` records): a folder or an "
                    "object-store URI such as s3://bucket/prefix (default <home>/registry)")
    offline_uri: str | None = Field(
        None, validation_alias="TESSERA_OFFLINE_URI",
        description="event log and, under experiments/, the prediction/outcome logs: a folder "
                    "or an object-store URI such as s3://bucket/prefix (default <home>/offline)")
    training_partition_rows: int = Field(
        4_000_000, ge=0,
        description="a polars training set folds at most about this many rows (events + spine "
                    "rows) at a time, in entity partitions, so memory stays bounded (0: one)")
    serve: ServeSettings = Field(default_factory=ServeSettings)
    project_file: Path | None = Field(None, exclude=True,
                                      description="the tessera.yaml these came from, if any")

    def __init__(self, home: str | Path | None = None, kafka_bootstrap: str | None = None,
                 redis_url: str | None = None, /, **values: Any) -> None:
        for key, value in (("home", home), ("kafka_bootstrap", kafka_bootstrap),
                           ("redis_url", redis_url)):
            if value is not None:
                values[key] = value
        super().__init__(**values)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _ProjectFile(settings_cls, find_project_file())

    @field_validator("home")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @model_validator(mode="before")
    @classmethod
    def _recorded_services(cls, data: Any) -> Any:
        """Fill unset addresses from ``<home>/services.json`` (written by ``tessera up``)."""
        if not isinstance(data, dict):
            return data
        if data.get("project_file") is None:
            data["project_file"] = find_project_file()
        home = data.get("TESSERA_HOME") or data.get("home") or ".tessera"
        state = Path(home).expanduser() / "services.json"
        names = {"kafka_bootstrap": "KAFKA_BOOTSTRAP", "redis_url": "REDIS_URL"}
        missing = [k for k, env in names.items() if not (data.get(k) or data.get(env))]
        if missing and state.exists():
            recorded = json.loads(state.read_text())
            for key, field in (("kafka_bootstrap", "bootstrap"), ("redis_url", "redis_url")):
                if key in missing and recorded.get(field):
                    data[key] = recorded[field]
        return data

    @classmethod
    def from_env(cls, home: str | Path | None = None) -> Settings:
        """The settings of this process (project file, environment), optionally at ``home``."""
        return cls(home)

    @property
    def registry_dir(self) -> Path:
        return self.home / "registry"

    @property
    def registry_location(self) -> str:
        """The feature registry's folder or URI: ``registry_uri``, else ``<home>/registry``."""
        return self.registry_uri or str(self.registry_dir)

    @property
    def offline_dir(self) -> Path:
        return self.home / "offline"

    @property
    def offline_location(self) -> str:
        """The event log's folder or URI: ``offline_uri``, else ``<home>/offline``. The
        prediction/outcome logs live under it too (``serving.experiments.report.dataset_dirs``)."""
        return self.offline_uri or str(self.offline_dir)

    @property
    def models_dir(self) -> Path:
        """The default models folder, ``<home>/models``, whatever ``models_uri`` says: only
        ``models_location``'s fallback (and tests, examples that set up that default). Anything
        that reads or writes models, specs, references or retrain runs uses ``models_location``,
        or a bucket-backed registry would be looked for on the local disk."""
        return self.home / "models"

    @property
    def models_location(self) -> str:
        """The model registry's folder or URI: ``models_uri``, else ``<home>/models``. Versions,
        aliases, deployment specs, references and retrain run states all live under it."""
        return self.models_uri or str(self.models_dir)

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap:
            raise TesseraError(
                "no Kafka broker configured: set kafka_bootstrap in tessera.yaml, "
                "KAFKA_BOOTSTRAP=host:port, or run `tessera up`"
            )
        return self.kafka_bootstrap

    def require_redis(self) -> str:
        if not self.redis_url:
            raise TesseraError(
                "no Redis configured: set redis_url in tessera.yaml, "
                "REDIS_URL=redis://host:port/0, or run `tessera up`"
            )
        return self.redis_url
