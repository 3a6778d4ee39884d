"""The one place a Redis client is made: the URL plus the ACL user, password and TLS files.

Settings (``features.settings``: ``redis_url``, ``redis_username``, ``redis_password``,
``redis_tls_ca``/``_cert``/``_key``) become a ``RedisTransport`` once per command; every
client -- worker, sinks, scorer, dashboard, CLI -- is built by ``connect`` from the URL and
that transport, so a password or CA set once reaches all of them. The credentials stay out of
the URL the components pass around (and log).

TLS is the URL's scheme: ``rediss://`` (one Redis) or ``rediss+cluster://`` (a cluster). TLS
files with a plaintext URL are refused rather than ignored, and a password set both in the URL
and in the settings is refused rather than one silently winning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from features.online.cluster import CLUSTER_SCHEME, RedisUrlError
from features.online.cluster import connect as connect_url

if TYPE_CHECKING:
    from features.settings import Settings

TLS_SCHEMES = ("rediss", "rediss+cluster")


@dataclass(frozen=True)
class RedisTransport:
    """How to reach Redis beyond its address: ACL user and password, TLS trust and identity."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisTransport:
        pw = settings.redis_password
        return cls(settings.redis_username, None if pw is None else pw.get_secret_value(),
                   settings.redis_tls_ca, settings.redis_tls_cert, settings.redis_tls_key)

    @property
    def uses_tls_files(self) -> bool:
        return any(p is not None for p in (self.tls_ca, self.tls_cert, self.tls_key))

    def client_kwargs(self, url: str) -> dict[str, Any]:
        """redis-py keyword arguments (``redis.Redis`` and ``RedisCluster`` name them alike)
        for a client of ``url``."""
        parts = urlsplit(url)
        tls = parts.scheme in TLS_SCHEMES
        if self.uses_tls_files and not tls:
            raise RedisUrlError(
                f"redis_tls_ca/redis_tls_cert/redis_tls_key are set but redis_url uses "
                f"{parts.scheme}://, which is plaintext; write rediss://host:port/0 (or "
                f"rediss+cluster://host:port) to connect with TLS")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise RedisUrlError("redis_tls_cert and redis_tls_key go together (a client "
                                "certificate and its key); set both or neither")
        if self.password is not None and parts.password:
            raise RedisUrlError("the Redis password is set both in redis_url and in "
                                "redis_password; keep one (redis_password keeps it out of URLs)")
        for p in (self.tls_ca, self.tls_cert, self.tls_key):
            if p is not None and not Path(p).is_file():
                raise RedisUrlError(f"Redis TLS file {p} does not exist")
        out: dict[str, Any] = {}
        if self.username is not None and not parts.username:
            out["username"] = self.username
        if self.password is not None:
            out["password"] = self.password
        if tls:
            if self.tls_ca is not None:
                out["ssl_ca_certs"] = str(self.tls_ca)
            if self.tls_cert is not None:
                out["ssl_certfile"] = str(self.tls_cert)
                out["ssl_keyfile"] = str(self.tls_key)
        return out


def connect(url: str, transport: RedisTransport | None = None, **kwargs: Any) -> Any:
    """A ``redis.Redis`` or ``RedisCluster`` for ``url`` with ``transport``'s credentials and
    TLS files; ``kwargs`` (timeouts, retry) go to the client."""
    options = (transport or RedisTransport()).client_kwargs(url)
    parts = urlsplit(url)
    if parts.scheme == "rediss+cluster":  # features.online.cluster parses redis+cluster://
        url = urlunsplit((CLUSTER_SCHEME, *parts[1:]))
        options["ssl"] = True
    return connect_url(url, **options, **kwargs)


def connect_settings(settings: Settings, **kwargs: Any) -> Any:
    """The online store's client as ``settings`` describe it (``require_redis`` first)."""
    return connect(settings.require_redis(), RedisTransport.from_settings(settings), **kwargs)
