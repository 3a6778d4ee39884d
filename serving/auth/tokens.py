"""API tokens, stored hashed in ``<home>/tokens.json``.

A token is ``tsr_<id>_<secret>``: the id finds the record, the secret is 32 random bytes from
``secrets`` and only its SHA-256 is kept (a slow password hash buys nothing for a secret with
256 bits of entropy, and would cost every request). Comparison is ``hmac.compare_digest``.
The file is replaced atomically on every change; servers re-read it when it changes, so a
revoked token stops working within a second, without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from features.errors import TesseraError

SCOPES = ("features:read", "predict", "push", "outcomes", "ui", "admin")
PREFIX = "tsr_"


class TokenError(TesseraError):
    """A token operation that cannot be done (unknown scope, unknown id, bad file)."""


@dataclass(frozen=True)
class TokenRecord:
    id: str
    name: str
    scopes: tuple[str, ...]
    sha256: str
    created: float
    revoked: float | None = None

    def allows(self, scope: str) -> bool:
        """``admin`` may do everything; other scopes only what they name."""
        return self.revoked is None and (scope in self.scopes or "admin" in self.scopes)


@dataclass
class TokenStore:
    path: Path
    _records: dict[str, TokenRecord] = field(default_factory=dict)
    _stamp: tuple[int, int] | None = None
    _checked: float = 0.0

    @classmethod
    def at_home(cls, home: Path) -> TokenStore:
        store = cls(Path(home) / "tokens.json")
        store.reload()
        return store

    # -- administration (the CLI) ---------------------------------------------------------
    def create(self, name: str, scopes: list[str]) -> str:
        """A new token with ``scopes``; the returned secret is shown once and never stored."""
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise TokenError(f"unknown or no scopes {unknown or scopes}; choose from "
                             f"{', '.join(SCOPES)}")
        self.reload(force=True)
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        self._records[token_id] = TokenRecord(token_id, name, tuple(sorted(set(scopes))),
                                              _digest(secret), time.time())
        self._save()
        return f"{PREFIX}{token_id}_{secret}"

    def revoke(self, token_id: str) -> TokenRecord:
        self.reload(force=True)
        rec = self._records.get(token_id)
        if rec is None:
            raise TokenError(f"no token with id {token_id!r} (see `tessera tokens list`)")
        if rec.revoked is None:
            rec = TokenRecord(**{**asdict(rec), "revoked": time.time()})
            self._records[token_id] = rec
            self._save()
        return rec

    def records(self) -> list[TokenRecord]:
        self.reload(force=True)
        return sorted(self._records.values(), key=lambda r: r.created)

    @property
    def active(self) -> bool:
        """Whether any token can be used: then every non-public route needs one."""
        return any(r.revoked is None for r in self._records.values())

    # -- the request path ------------------------------------------------------------------
    def verify(self, token: str) -> TokenRecord | None:
        """The live record of ``token``, or None (unknown, malformed, revoked)."""
        self.reload()
        if not token.startswith(PREFIX):
            return None
        token_id, sep, secret = token[len(PREFIX):].partition("_")
        rec = self._records.get(token_id)
        if not sep or rec is None or rec.revoked is not None:
            return None
        return rec if hmac.compare_digest(rec.sha256, _digest(secret)) else None

    def reload(self, force: bool = False, every_s: float = 1.0) -> None:
        """Re-read the file if it changed (checked at most every ``every_s`` seconds)."""
        now = time.monotonic()
        if not force and now - self._checked < every_s:
            return
        self._checked = now
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._records, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp and not force:
            return
        try:
            raw = json.loads(self.path.read_text())
            records = {r["id"]: TokenRecord(**{**r, "scopes": tuple(r["scopes"])})
                       for r in raw["tokens"]}
        except (ValueError, KeyError, TypeError) as e:
            raise TokenError(f"{self.path} is not a Tessera token file ({e}); restore it or "
                             "remove it and create tokens again") from e
        self._records, self._stamp = records, stamp

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        body = {"tokens": [asdict(r) for r in self._records.values()]}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(body, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        st = self.path.stat()
        self._stamp = (st.st_mtime_ns, st.st_size)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
